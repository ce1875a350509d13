"""The method registry: name -> function (W [O, I], LayerStats, QuantSettings, group_colmax) -> QuantizedLinear.

    rtn          per-channel W, per-token A, round to nearest                       docs/aser.md, A2
    smoothquant  smoothing factors folded into W, then RTN                           SmoothQuant
    lorc         RTN + plain SVD of the weight error                                LoRC
    l2qer        RTN + SVD of the error scaled by mean|x|                           LQER Sec. 3.2
    gptq         GPTQ weights (error feedback through H^-1)                          GPTQ Alg. 1
    aser         smoothing + outlier extraction + whitening-SVD error reconstruction   ASER

Every method shares the quantizers (refq.aser.rtn, refq.aser.qlinear), the calibration statistics
(refq.aser.calibrate) and, where there is a low-rank branch, the rank rule of the settings. `group_colmax`
is the column absmax over the linears sharing this layer's input (shared smoothing), or None.

References: the baselines' papers, cited in their modules; ASER, AAAI 2025 (the baselines it compares with:
SmoothQuant, LoRC, L2QER); docs/aser.md, A8 (LLM.int8() and SmoothQuant+ are not implemented).
"""
from __future__ import annotations

from refq.aser.aser import aser
from refq.aser.gptq import gptq
from refq.aser.l2qer import l2qer
from refq.aser.lorc import lorc
from refq.aser.qlinear import QuantizedLinear
from refq.aser.rtn import rtn
from refq.aser.settings import QuantSettings
from refq.aser.smoothquant import smoothquant

METHODS = {"rtn": rtn, "smoothquant": smoothquant, "lorc": lorc, "l2qer": l2qer, "gptq": gptq, "aser": aser}
LOWRANK_METHODS = ("lorc", "l2qer", "aser")
DEFAULT_SCOPE = {"smoothquant": "shared", "aser": "layer"}


def quantize_linear(method: str, w, stats, settings: QuantSettings, group_colmax=None) -> QuantizedLinear:
    """Run one registered method on one layer; ValueError naming an unknown method."""
    if method not in METHODS:
        raise ValueError(f"quantize_linear: method={method!r}, expected one of {sorted(METHODS)}")
    if not isinstance(settings, QuantSettings):
        raise ValueError(f"quantize_linear: settings is a {type(settings).__name__}, expected QuantSettings")
    return METHODS[method](w, stats, settings, group_colmax)
