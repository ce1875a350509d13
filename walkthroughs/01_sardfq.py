# %% [markdown]
# # SARDFQ step by step: data-free W4A4 quantization of a small ViT
#
# Zhong et al., "Semantic Alignment and Reinforcement for Data-Free Quantization of Vision Transformers",
# arXiv:2412.16553 (ICCV 2025). Where refq departs from it: docs/sardfq.md. Run with `python walkthroughs/01_sardfq.py`
# (about a minute with the small settings below; figures go to walkthroughs/figures/).
#
# Stage 1 inverts the full-precision (FP) ViT into 32 calibration images: starting from noise, the images
# are optimised so that (APA) the class-token attention of the later blocks matches random Gaussian-mixture
# priors, (MSR) image regions classify as their own, different classes, and (SL) the classifier outputs
# match soft targets. Stage 2 quantizes the ViT (4-bit weights and activations) with those images only.

# %%
import os
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refq.autograd import Tensor, no_grad  # noqa: E402
from refq.models import vit  # noqa: E402
from refq.models.vit_train import accuracy, predict  # noqa: E402
from refq.sardfq import losses, pipeline  # noqa: E402
from refq.sardfq.msr import msr_crops  # noqa: E402
from refq.sardfq.priors import sample_priors  # noqa: E402
from refq.sardfq.quant_vit import QuantOps, init_quantizers, quantizer_summary  # noqa: E402
from refq.sardfq.synthesis import SynthConfig, sample_targets, synthesize  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"
FIGURES.mkdir(exist_ok=True)
SEED = 0
print("seed", SEED)
start = time.time()

# %% [markdown]
# ## The subject model
# The ViT that ships with refq (Fashion-MNIST, 28x28, patch 4 -> 7x7 = 49 patch tokens + CLS, width 96,
# depth 6, 3 heads). Set REFQ_VIT=path.npz to use another refq ViT checkpoint.

# %%
params, cfg, manifest = pipeline.load_model(os.environ.get("REFQ_VIT"))
test_x, test_y = pipeline.fashion_mnist(cfg, "test", limit=300)
fp_top1 = accuracy(params, cfg, test_x, test_y)
print(f"ViT depth {cfg.depth}, width {cfg.embed_dim}, heads {cfg.num_heads}, grid {cfg.grid}x{cfg.grid}")
print(f"FP32 top-1 on 300 test images: {100 * fp_top1:.2f}%")  # expect: close to the checkpoint's test_top1

# %% [markdown]
# ## What APA aligns: class-token attention
# Row 0 of the post-softmax attention of block l, head h, restricted to the 49 patch keys, is a heat map
# on the 7x7 patch grid. On a real image the later blocks look at the object.

# %%
with no_grad():
    _, attns = vit.forward(params, cfg, Tensor(test_x[:1]), return_attn=True)
last = attns[-1].data[0, :, 0, 1:].reshape(cfg.num_heads, cfg.grid, cfg.grid)  # [H, G, G]
fig, ax = plt.subplots(1, cfg.num_heads + 1, figsize=(2.2 * (cfg.num_heads + 1), 2.4))
ax[0].imshow(test_x[0, 0], cmap="gray")
ax[0].set_title(f"test image (class {test_y[0]})")
for h in range(cfg.num_heads):
    ax[h + 1].imshow(last[h], cmap="viridis")
    ax[h + 1].set_title(f"block {cfg.depth}, head {h + 1}")
for a in ax:
    a.axis("off")
fig.savefig(FIGURES / "sardfq_attention_real.png", dpi=120, bbox_inches="tight")
print("CLS attention to patches, last block: sums per head", last.sum(axis=(1, 2)).round(3))  # expect: < 1 (CLS->CLS excluded)

# %% [markdown]
# ## A sampled attention prior (APA; docs/sardfq.md, S2)
# K ~ U{1..5} isotropic Gaussians with random centres, widths and weights, normalised to sum 1.

# %%
rng = np.random.default_rng(SEED)
blocks = losses.apa_blocks(cfg.depth)
priors = sample_priors(1, len(blocks), cfg.num_heads, cfg.grid, 5, rng)  # [1, nL, H, G*G]
print("APA blocks (1-indexed):", [b + 1 for b in blocks], "depth weights:", [round((b + 1) / cfg.depth, 2) for b in blocks])
print("prior shape", priors.shape, "sums", priors.sum(-1).round(4).ravel()[:3], "min", priors.min())  # expect: sums 1, min >= 0
fig, ax = plt.subplots(1, cfg.num_heads, figsize=(2.2 * cfg.num_heads, 2.4))
for h in range(cfg.num_heads):
    ax[h].imshow(priors[0, -1, h].reshape(cfg.grid, cfg.grid), cmap="viridis")
    ax[h].set_title(f"prior, head {h + 1}")
    ax[h].axis("off")
fig.savefig(FIGURES / "sardfq_priors.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## Soft labels and MSR regions (MSR and SL; docs/sardfq.md, S3-S4)
# Every image gets a label y0 and 1-4 of the four 14x14 quadrants, each with its own distinct label. The
# image's soft target covers all of them (logits Z ~ U(5, 10) at the targets, 0 elsewhere, softmax).

# %%
sc = SynthConfig(batch=8, iters=10, log_every=5)  # small: the paper uses 32 images x 1000 iterations
targets = sample_targets(cfg, sc, np.random.default_rng(SEED))
plan = targets.plan
print("image labels y0:", targets.labels.tolist())
print("image 0 regions (x0, y0, x1, y1):", plan.boxes[plan.batch_index == 0].tolist(),
      "labels:", plan.labels[plan.batch_index == 0].tolist())
print("image 0 soft target:", targets.image_targets[0].round(3))  # expect: mass only on y0 and its region labels
crops = msr_crops(Tensor(test_x[:sc.batch]), plan, (cfg.img_size, cfg.img_size)).data  # [R, 1, 28, 28]
rows = np.flatnonzero(plan.batch_index == 0)
fig, ax = plt.subplots(1, len(rows) + 1, figsize=(2.2 * (len(rows) + 1), 2.4))
ax[0].imshow(test_x[0, 0], cmap="gray")
ax[0].set_title("image")
for j, r in enumerate(rows):
    ax[j + 1].imshow(crops[r, 0], cmap="gray")
    ax[j + 1].set_title(f"region {plan.boxes[r].tolist()}", fontsize=7)
for a in ax:
    a.axis("off")
fig.savefig(FIGURES / "sardfq_msr_crops.png", dpi=120, bbox_inches="tight")
print("crops", crops.shape)  # expect: each region upsampled 2x to 28x28

# %% [markdown]
# ## Synthesis: PSAQ-ViT vs SARDFQ
# The same loop (Adam, betas (0.5, 0.9), warm-up + cosine per round, roll jitter, flips, pixel clipping);
# PSAQ-ViT maximises patch-similarity entropy with one-hot CE, SARDFQ uses APA + MSR + SL.

# %%
synth = {}
for method in ("psaq", "sardfq"):
    synth[method] = synthesize(params, cfg, replace(sc, method=method), np.random.default_rng(SEED))
    h = synth[method].history
    print(f"{method}: loss {h[0]['loss']:.3f} -> {h[-1]['loss']:.3f} in {synth[method].seconds:.1f} s "
          f"({synth[method].seconds / sc.batch:.2f} s/image)")  # expect: the loss falls
    pred = predict(params, cfg, synth[method].images).argmax(-1)
    print(f"  FP model predicts the target label y0 on {np.mean(pred == synth[method].labels):.0%} of the images")
    pipeline.save_image_grid(synth[method].images, cfg, FIGURES / f"sardfq_synthetic_{method}.png", scale=4)

# %% [markdown]
# ## Quantizer ranges (W4A4)
# Per-channel weights, per-tensor activations, fitted by percentile-MSE search on the calibration images.

# %%
ops = init_quantizers(params, cfg, QuantOps(4, 4), synth["sardfq"].images)
summary = quantizer_summary(ops)
for row in summary[:6]:
    print(f"{row['kind']:6s} {row['key']:24s} {row['bits']} bits  [{row['lo']:+.3f}, {row['hi']:+.3f}]")
acts = [r for r in summary if r["kind"] == "act"]
fig, ax = plt.subplots(figsize=(8, 2.6))
ax.bar(range(len(acts)), [r["hi"] - r["lo"] for r in acts])
ax.set_xticks(range(len(acts)))
ax.set_xticklabels([r["key"].replace("blocks.", "b") for r in acts], rotation=90, fontsize=5)
ax.set_ylabel("activation range width")
fig.savefig(FIGURES / "sardfq_act_ranges.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## W4A4 accuracy by calibration source
# Block reconstruction (shortened to 10 steps per unit here; 100 in the paper) on each set of 8 images,
# then top-1 on the 300 test images. Real images are Fashion-MNIST training images.

# %%
real_pool, _ = pipeline.fashion_mnist(cfg, "train", limit=2000)
calib = {"noise": np.random.default_rng(SEED).standard_normal(synth["psaq"].images.shape).astype(np.float32),
         "psaq": synth["psaq"].images, "sardfq": synth["sardfq"].images,
         "real": real_pool[np.random.default_rng(SEED).choice(len(real_pool), sc.batch, replace=False)]}
for name, images in calib.items():
    out = pipeline.quantize_and_evaluate(params, cfg, images, 4, 4, test_x, test_y, np.random.default_rng(SEED),
                                         recon_iters=10, log=lambda m: None)
    print(f"W4A4 {name:6s}: top-1 {100 * out['top1']:.2f}%  (FP32 {100 * fp_top1:.2f}%)")
ops, qparams = out["ops"], out["params"]  # the last one: real-image calibration
sim_pred = predict(qparams, cfg, test_x, ops=ops).argmax(-1)
ops.integer = True  # the same model with every linear layer on the Numba integer kernels
int_pred = predict(qparams, cfg, test_x, ops=ops).argmax(-1)
print(f"integer path agrees with the fake-quant simulation on {np.mean(sim_pred == int_pred):.1%} of the images")  # expect: >= 99.5%
print(f"walkthrough finished in {time.time() - start:.0f} s")
