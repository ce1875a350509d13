# %% [markdown]
# # ASER on stories260K: activation smoothing + whitening-SVD error reconstruction
#
# Zhao et al., "ASER: Activation Smoothing and Error Reconstruction for Large Language Model
# Quantization", AAAI 2025 (arXiv:2411.07762). Each linear layer y = W x becomes
#
#     y = Q_A(x / m) @ Q_W(W_n).T + (x / m) @ L_B.T @ L_A.T
#
# m smooths the activation outliers into the weights, the f outlier channels are taken out of W_n, and
# L_A L_B is the rank-r correction of the total error E that minimises the *output* error on the
# calibration inputs: the truncated SVD of the whitened error E S, S S^T = X_s^T X_s.
#
# This walkthrough computes, on the 260K-parameter llama2.c model (width 64, hidden 172, 5 layers):
# 1. the activation outlier channels before and after smoothing,
# 2. the singular spectrum of the plain vs the whitened error,
# 3. the output error of LoRC / L2QER / ASER as the rank grows,
# 4. the perplexity of every method at W4A8.
# Figures go to walkthroughs/figures/. Run: `python walkthroughs/02_aser.py` (about a minute).

# %%
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from refq.aser.evaluate import relative_output_error
from refq.aser.experiment import prepare_llama, run_llama
from refq.aser.methods import quantize_linear
from refq.aser.rtn import dequantize_weight, quantize_weight
from refq.aser.settings import QuantSettings
from refq.aser.smoothing import smooth_inputs, smoothing_factors, weight_column_absmax
from refq.aser.whiten_svd import cholesky_with_fallback, effective_rank

ASSETS = Path(os.environ.get("REFQ_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets"))
FIGURES = Path(__file__).resolve().parent / "figures"
FIGURES.mkdir(exist_ok=True)
t_start = time.perf_counter()

# Calibrate on the first 4 distinct stories; score on the first 2048 tokens of the other stories.
exp = prepare_llama(ASSETS / "llama2c/stories260K.bin", ASSETS / "llama2c/tok512.bin",
                    ASSETS / "text/tinystories_excerpt.txt", eval_tokens=2048)
print("calibration tokens", exp.calib_ids.size, "| eval tokens", exp.eval_ids.size, "| FP ppl", round(exp.fp["ppl"], 4))
# expect: calibration tokens 2640 | eval tokens 2048 | FP ppl 5.64

# %% [markdown]
# ## 1. Activation outlier channels, before and after smoothing
# The input of the first w2 (the SwiGLU product, 172 channels) has a few channels larger than the rest.
# Smoothing with m_j = a_j^0.5 / w_j^0.5 divides them down and multiplies the matching weight columns up,
# keeping W x unchanged. stories260K's outliers are mild (max/median about 4, against 100x in billion-
# parameter LLMs), which limits what AS can do here.

# %%
name = "layers.0.w2"
stats, w = exp.stats[name], exp.weights[name]  # LayerStats of the input, W [64, 172]
m = smoothing_factors(stats.absmax, weight_column_absmax(w), alpha=0.5)  # [172]
x = exp.held_out[name]  # held-out FP inputs [1024, 172]
before, after = np.abs(x).max(0), np.abs(smooth_inputs(x, m.astype(np.float32))).max(0)  # [172] each


def ratio(a):
    return float(a.max() / np.median(a))


print(f"{name}: max/median channel absmax before {ratio(before):.1f}, after smoothing {ratio(after):.1f}")
print("top-3 channels before:", np.argsort(-before)[:3].tolist())
assert ratio(after) < ratio(before)  # smoothing flattens the per-channel range
fig, ax = plt.subplots(1, 2, figsize=(10, 3), sharey=True)
ax[0].bar(np.arange(before.size), before), ax[0].set_title(f"{name} input: max |x_j|")
ax[1].bar(np.arange(after.size), after, color="tab:orange"), ax[1].set_title("after smoothing: max |x_j / m_j|")
fig.tight_layout(), fig.savefig(FIGURES / "aser_outlier_channels.png", dpi=100)

# %% [markdown]
# ## 2. Singular spectrum of the quantization error: plain vs whitened
# The plain error E = W - Q(W) of a 4-bit RTN weight is close to full-rank noise (flat spectrum, high
# effective rank). Whitened by the inputs (E S, S S^T = X^T X), more of the *output* error sits in the
# leading directions, which is what a small rank can fix. The effective rank (Roy & Vetterli) drops in
# every one of the 35 layers.

# %%


def spectra(layer):
    """Singular values of E and of E S for the 4-bit RTN error of one layer."""
    w_l = exp.weights[layer]
    e = w_l.astype(np.float64) - dequantize_weight(*quantize_weight(w_l, 4))  # [O, I]
    s, _ = cholesky_with_fallback(exp.stats[layer].gram)  # S S^T = X^T X
    return np.linalg.svd(e, compute_uv=False), np.linalg.svd(e @ s, compute_uv=False)


eranks = {layer: tuple(effective_rank(sig) for sig in spectra(layer)) for layer in exp.weights}
for kind in ("wq", "wk", "wv", "wo", "w1", "w3", "w2"):
    plain, white = np.mean([v for k, v in eranks.items() if k.endswith(kind)], axis=0)
    print(f"{kind}: mean effective rank of E {plain:.1f} -> of E S {white:.1f}")
assert all(white < plain for plain, white in eranks.values())
sig_plain, sig_white = spectra("layers.1.wv")
fig, ax = plt.subplots(1, 2, figsize=(10, 3))
ax[0].semilogy(sig_plain / sig_plain[0], label="E (plain)")
ax[0].semilogy(sig_white / sig_white[0], label="E S (whitened)")
ax[0].set_xlabel("index"), ax[0].set_ylabel("sigma_i / sigma_1"), ax[0].legend(), ax[0].set_title("layers.1.wv, W4")
ax[1].plot([v[0] for v in eranks.values()], label="E"), ax[1].plot([v[1] for v in eranks.values()], label="E S")
ax[1].set_xlabel("layer (5 blocks x wq wk wv wo w1 w3 w2)"), ax[1].set_ylabel("effective rank"), ax[1].legend()
fig.tight_layout(), fig.savefig(FIGURES / "aser_error_spectrum.png", dpi=100)

# %% [markdown]
# ## 3. Output error vs rank (held-out inputs, W4A8)
# LoRC truncates the plain SVD of E, L2QER scales the columns by mean|x| first, ASER whitens with the full
# Cholesky factor, with (AS + ER) or without (ER only) smoothing and outlier extraction. Same RTN base.
# Two layers: in layers.1.wv smoothing helps a lot; in layers.0.w2 it costs more weight precision than
# it saves on the activations (4-bit weights, mild outliers, alpha = 0.5).

# %%
ranks = [0, 1, 2, 4, 8, 16, 32]
variants = (("lorc", {}), ("l2qer", {}), ("aser", {"smooth": False}), ("aser", {}))
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for ax, layer in zip(axes, ("layers.1.wv", "layers.0.w2")):
    w_l, st_l, x_l = exp.weights[layer], exp.stats[layer], exp.held_out[layer]
    for method, extra in variants:
        label = method + (" (ER only)" if extra else "")
        errs = [relative_output_error(w_l, quantize_linear(method, w_l, st_l, QuantSettings(rank=r, **extra)), x_l)
                for r in ranks]
        print(f"{layer} {label:16s}", " ".join(f"r={r}:{v:.4f}" for r, v in zip(ranks, errs)))
        ax.plot(ranks, errs, marker="o", label=label)
    ax.set_xlabel("rank r"), ax.set_ylabel("relative output error"), ax.set_title(layer), ax.legend()
fig.tight_layout(), fig.savefig(FIGURES / "aser_error_vs_rank.png", dpi=100)
# expect: errors fall with r; ER-only ASER below LoRC and L2QER for 1 <= r < full rank; AS+ER lowest on wv, not on w2

# %% [markdown]
# ## 4. Perplexity of every method at W4A8 (rank 4 for the low-rank methods)

# %%
ppl = {"fp": exp.fp["ppl"]}
for method in ("rtn", "smoothquant", "gptq", "lorc", "l2qer", "aser"):
    rank = 4 if method in ("lorc", "l2qer", "aser") else None
    rec = run_llama(exp, method, QuantSettings(wbits=4, abits=8, rank=rank))
    ppl[method] = rec["ppl"]
    print(f"{method:12s} ppl {rec['ppl']:.4f}  overhead {rec['overhead_pct']:.1f}%  "
          f"mean layer error {rec['layer_err_mean']:.4f}")
# expect: rtn highest; aser lowest of the low-rank methods (trend ASER < L2QER < LoRC)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(list(ppl), list(ppl.values()), color=["gray"] + ["tab:blue"] * 6)
ax.set_ylim(min(ppl.values()) * 0.95, max(ppl.values()) * 1.02), ax.set_ylabel("perplexity")
ax.set_title("stories260K, W4A8 (2048 eval tokens)")
fig.tight_layout(), fig.savefig(FIGURES / "aser_perplexity.png", dpi=100)
print(f"figures in {FIGURES}; total {time.perf_counter() - t_start:.0f} s")
