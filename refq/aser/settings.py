"""The settings every ASER-family method reads: bit widths, rank rule, outliers, smoothing, base quantizer.

Defaults follow docs/aser.md, A2-A6, scaled to refq's small models: W4A8, alpha = 0.5, outlier count f = 1% of
the input width (at least 1; 1 channel at d = 64, 2 at 172, 4 at 384, 15 at 1536; the paper's f = 32 is
0.78% of 4096), energy-rule ranks capped at half the layer's smaller side.

References: ASER, AAAI 2025 (W4A8 / W4A6 per-channel settings, f = 32 outlier channels, the rank ablation of
Table 4); docs/aser.md, A2 (quantizers), A4 (outliers, alpha), A6 (rank rules).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

BASES = ("rtn", "gptq")
SCOPES = ("layer", "shared")
WHITENINGS = ("cholesky", "diag")
OUTLIER_FRACTION = 0.01


def default_outliers(d_in: int) -> int:
    """f = max(1, round(1% of d_in))."""
    return max(1, round(OUTLIER_FRACTION * d_in))


@dataclass(frozen=True)
class QuantSettings:
    """What to quantize and how; abits=None means activations stay in float (W-only, "A16")."""

    wbits: int = 4
    abits: int | None = 8
    rank: int | None = None  # fixed rank of the low-rank branch (methods with one)
    energy: float | None = None  # or: smallest rank whose share of the spectrum reaches this fraction
    squared_energy: bool = False  # energy over sigma^2 instead of sigma
    r_max: int | None = None  # cap of the energy rule; None = half the layer's smaller side
    outliers: int | None = None  # f, extracted input channels (ASER); None = default_outliers(d_in); <= rank
    alpha: float = 0.5  # migration strength of the smoothing factors
    smooth: bool = True  # ASER: activation smoothing + outlier extraction (False = ER only)
    smooth_scope: str | None = None  # "layer" (online, per linear) or "shared" (one m per norm-fed group)
    base: str = "rtn"  # weight quantizer under the low-rank branch: "rtn" or "gptq"
    whitening: str = "cholesky"  # ASER: full Cholesky S, or "diag" = diag(sqrt(diag H)) (ablation)
    mask_outlier_acts: bool = False  # zero the outlier channels of x_s before the activation quantizer
    lr_input_quantized: bool = False  # feed Q_A(x_s) (not x_s) to the low-rank branch
    gptq_block: int = 128
    act_order: bool = False
    damp: float = 0.01

    def __post_init__(self):
        fn = "QuantSettings"
        if isinstance(self.wbits, bool) or not isinstance(self.wbits, int) or not 2 <= self.wbits <= 8:
            raise ValueError(f"{fn}: wbits={self.wbits!r}, expected an int in 2..8")
        if self.abits is not None and (isinstance(self.abits, bool) or not isinstance(self.abits, int)
                                       or not 2 <= self.abits <= 8):
            raise ValueError(f"{fn}: abits={self.abits!r}, expected an int in 2..8 or None (float activations)")
        if self.rank is not None and self.energy is not None:
            raise ValueError(f"{fn}: give rank={self.rank!r} or energy={self.energy!r}, not both")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0):
            raise ValueError(f"{fn}: rank={self.rank!r}, expected a non-negative int")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ValueError(f"{fn}: energy={self.energy!r}, expected a fraction in (0, 1]")
        if self.outliers is not None and (isinstance(self.outliers, bool) or not isinstance(self.outliers, int)
                                          or self.outliers < 0):
            raise ValueError(f"{fn}: outliers={self.outliers!r}, expected a non-negative int")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"{fn}: alpha={self.alpha!r}, expected a value in [0, 1]")
        if self.r_max is not None and self.r_max < 0:
            raise ValueError(f"{fn}: r_max={self.r_max!r}, expected a non-negative int")
        for name, value, allowed in (("base", self.base, BASES), ("whitening", self.whitening, WHITENINGS),
                                     ("smooth_scope", self.smooth_scope, SCOPES + (None,))):
            if value not in allowed:
                raise ValueError(f"{fn}: {name}={value!r}, expected one of {allowed}")
        if self.gptq_block < 1 or not 0.0 <= self.damp:
            raise ValueError(f"{fn}: gptq_block={self.gptq_block!r} must be >= 1 and damp={self.damp!r} >= 0")

    def with_(self, **changes) -> "QuantSettings":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def rank_rule(self) -> dict:
        """Keyword arguments of whiten_svd.choose_rank: {"rank": r} or {"energy": e, ...}; rank 0 if neither."""
        if self.energy is not None:
            return {"energy": self.energy, "squared": self.squared_energy}
        return {"rank": 0 if self.rank is None else self.rank}

    def rank_cap(self, d_out: int, d_in: int) -> int:
        """Largest rank allowed: r_max, else half the smaller side under the energy rule, else full."""
        if self.r_max is not None:
            return min(self.r_max, d_out, d_in)
        return min(d_out, d_in) // 2 if self.energy is not None else min(d_out, d_in)

    def n_outliers(self, d_in: int) -> int:
        """f for a layer with d_in inputs; with a fixed rank r at most r (a column no branch carries is lost)."""
        f = default_outliers(d_in) if self.outliers is None else min(self.outliers, d_in)
        return f if self.energy is not None else min(f, self.rank or 0)
