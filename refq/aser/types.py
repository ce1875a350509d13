"""Types and names shared by the calibration pass, the methods and the model wiring of refq.aser.

* `LayerStats`: the calibration statistics of one linear layer's input x, everything a method reads
  (ASER's Error Reconstruction whitens with the Gram X^T X; smoothing and the outlier score use the
  per-channel absmax; L2QER scales by mean|x|);
* `LLAMA_LINEARS`, `BERT_LINEARS`: the quantized linears of one stories260K block and of one MiniLM layer
  (every linear inside the transformer blocks, docs/aser.md A1).

Kept apart so that refq.aser.calibrate (the FP pass), refq.aser.apply (quantizing a model) and the
method modules depend on this module and not on each other.

References: Zhao et al., "ASER", AAAI 2025 (Error Reconstruction); Zhang et al., "LQER", ICML 2024, Sec. 3.2
(mean|x|); Xiao et al., "SmoothQuant", ICML 2023, Eq. 4 (absmax per input channel).
"""
from __future__ import annotations

import numpy as np

LLAMA_LINEARS = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")
BERT_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                "intermediate.dense", "output.dense")


class LayerStats:
    """Running statistics of one linear layer's input channels over the calibration tokens."""

    def __init__(self, d_in: int, keep_inputs: int = 0):
        self.gram = np.zeros((d_in, d_in), np.float64)  # [I, I]
        self.absmax = np.zeros(d_in, np.float64)  # [I]
        self.abs_sum = np.zeros(d_in, np.float64)  # [I]
        self.count = 0
        self.keep_inputs = int(keep_inputs)
        self._kept: list[np.ndarray] = []

    @classmethod
    def from_inputs(cls, x: np.ndarray, keep_inputs: bool = True) -> "LayerStats":
        """Statistics of the rows of x [N, I] in one go (tests, single layers)."""
        stats = cls(x.shape[1], x.shape[0] if keep_inputs else 0)
        stats.update(x)
        return stats

    d_in = property(lambda self: self.gram.shape[0])

    def update(self, x: np.ndarray) -> None:
        """Add the token rows x [N, I] to every statistic."""
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"LayerStats.update: x has shape {x.shape}, expected [N, {self.d_in}]")
        x64 = x.astype(np.float64)  # [N, I]
        self.gram += x64.T @ x64  # [I, N] @ [N, I] -> [I, I]
        self.absmax = np.maximum(self.absmax, np.abs(x64).max(axis=0, initial=0.0))  # [I]
        self.abs_sum += np.abs(x64).sum(axis=0)  # [I]
        self.count += x.shape[0]
        room = self.keep_inputs - sum(len(k) for k in self._kept)
        if room > 0:
            self._kept.append(x[:room].astype(np.float32))

    @property
    def mean_abs(self) -> np.ndarray:
        """mean_t |x_tj|, float64 [I]."""
        return self.abs_sum / max(self.count, 1)

    @property
    def inputs(self) -> np.ndarray | None:
        """The kept rows, float32 [n, I], or None when none were kept."""
        return np.concatenate(self._kept) if self._kept else None
