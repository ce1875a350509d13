# %% [markdown]
# # refq foundations: autograd, quantizers, integer kernels
#
# Everything refq's three papers need sits on three small pieces:
# 1. a reverse-mode autograd (`refq.autograd`), checked against finite differences;
# 2. quantizers (`refq.quant`) that fit a range, then map floats to integer codes and back;
# 3. Numba integer GEMMs (`refq.kernels`) that multiply int8 (or packed int4) codes exactly.
# Run: `python walkthroughs/00_foundations.py` (a few seconds). Figures go to walkthroughs/figures/.

# %%
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.kernels import gemm_int4, gemm_int8, gemm_int8_dequant
from refq.kernels.reference import gemm_int8_ref
from refq.quant import fit_minmax, fit_mse, dequantize, quantize
from refq.quant.int4 import pack_int4, unpack_int4
from refq.quant.log2 import log2_fake_quantize

FIGURES = Path(__file__).resolve().parent / "figures"
FIGURES.mkdir(exist_ok=True)
SEED = 0
rng = np.random.default_rng(SEED)
print("seed", SEED)

# %% [markdown]
# ## 1. Autograd: a softmax-attention score, its gradient, and the finite-difference check
# `backward()` walks the graph in reverse topological order; each op's backward is a VJP.

# %%
q = rng.standard_normal((4, 8))  # [T, Dh], float64 for the check
k = rng.standard_normal((4, 8))


def score(q_arr):
    qt = Tensor(q_arr, requires_grad=True)
    attn = F.softmax(F.matmul(qt, F.transpose(Tensor(k))) * (1 / np.sqrt(8)), axis=-1)  # [T, T]
    out = F.sum(attn * np.arange(16.0).reshape(4, 4))
    return qt, out


qt, out = score(q)
out.backward()
eps, fd = 1e-6, np.zeros_like(q)
for idx in np.ndindex(q.shape):
    dq = np.zeros_like(q)
    dq[idx] = eps
    fd[idx] = (score(q + dq)[1].item() - score(q - dq)[1].item()) / (2 * eps)
print("autograd vs finite differences, max |diff|:", float(np.abs(qt.grad - fd).max()))  # expect: ~1e-9
assert np.allclose(qt.grad, fd, atol=1e-7)

# %% [markdown]
# ## 2. Quantizers: fit a range, quantize, dequantize
# Min-max keeps every value in range; an MSE search may clip outliers to get a finer step.
# Per-channel scales follow each row's own range.

# %%
w = rng.standard_normal((16, 64)).astype(np.float32)
w[3, 5] = 12.0  # one outlier weight
for name, params in [("per-tensor min-max", fit_minmax(w, 4)),
                     ("per-tensor MSE search", fit_mse(w, 4)),
                     ("per-channel min-max", fit_minmax(w, 4, granularity="channel", axis=0))]:
    codes = quantize(w, params)
    err = float(np.mean((dequantize(codes, params) - w) ** 2))
    print(f"{name:24s} codes {codes.dtype} in [{codes.min()}, {codes.max()}]  MSE {err:.5f}")

x = np.linspace(-3, 3, 601, dtype=np.float32)
p = fit_minmax(x, 3)
a = np.linspace(0, 1, 401, dtype=np.float32)
fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
ax[0].plot(x, dequantize(quantize(x, p), p), label="3-bit uniform")
ax[0].plot(x, x, "k:", lw=0.8)
ax[0].set_title("uniform quantizer (3 bits)")
ax[1].plot(a, log2_fake_quantize(a, 3), label="log2")
ax[1].plot(a, a, "k:", lw=0.8)
ax[1].set_title("log2 quantizer for attention (3 bits)")
fig.tight_layout()
fig.savefig(FIGURES / "00_quantizers.png", dpi=110)
print("wrote", FIGURES / "00_quantizers.png")

# %% [markdown]
# ## 3. Integer GEMM: int8 x int8 -> int32, exact; int4 weights packed two per byte

# %%
a8 = rng.integers(-128, 128, size=(64, 96), dtype=np.int8)  # [M, K] activations
b8 = rng.integers(-128, 128, size=(48, 96), dtype=np.int8)  # [N, K] weights
c = gemm_int8(a8, b8)  # [M, N] int32
print("int8 GEMM", c.shape, c.dtype, "equals int64 reference:", bool(np.array_equal(c, gemm_int8_ref(a8, b8))))
b4 = rng.integers(-8, 8, size=(48, 95), dtype=np.int8)
packed = pack_int4(b4)  # [N, ceil(K/2)] uint8
print("int4 packing", b4.shape, "->", packed.shape, packed.dtype, "round trip:",
      bool(np.array_equal(unpack_int4(packed, 95), b4)))
c4 = gemm_int4(a8[:, :95].copy(), packed, 95)
print("int4 GEMM equals int64 reference:", bool(np.array_equal(c4, gemm_int8_ref(a8[:, :95].copy(), b4))))

# A quantized linear layer: per-token activation scales x per-channel weight scales.
xf = rng.standard_normal((64, 96)).astype(np.float32)
wf = rng.standard_normal((48, 96)).astype(np.float32)
sa = np.abs(xf).max(1) / 127
sw = np.abs(wf).max(1) / 127
qa = np.round(xf / sa[:, None]).astype(np.int8)
qw = np.round(wf / sw[:, None]).astype(np.int8)
y = gemm_int8_dequant(qa, qw, sa.astype(np.float32), sw.astype(np.float32))
rel = np.linalg.norm(y - xf @ wf.T) / np.linalg.norm(xf @ wf.T)
print(f"W8A8 linear layer: relative output error {rel:.4f}")  # expect: below 0.01

t0 = time.perf_counter()
big_a = rng.integers(-128, 128, size=(256, 256), dtype=np.int8)
gemm_int8(big_a, big_a)
print(f"256^3 int8 GEMM in {1e3 * (time.perf_counter() - t0):.1f} ms (see `refq bench gemm` for throughput)")
