# %% [markdown]
# # 03 — The joint text spotter, one scene at a time
#
# Sui et al., "A Novel Integrated Framework for Learning both Text Detection and Recognition"
# (ICPR 2018, arXiv:1811.08611): one shared CNN backbone feeds a detector of horizontal word boxes
# and, through a *text pooling* layer, a recognizer made only of convolutions whose per-column class
# scores are trained with CTC. This walkthrough follows one synthetic scene through refq's version
# (`refq/spotter/model.py`): ground truth, score map, pooled word features, per-column CTC
# probabilities with the best path, and the decoded words. It uses the shipped weights
# (refq/weights/spotter.npz). Run: `python walkthroughs/03_spotter.py` (figures in walkthroughs/figures/).

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from refq.autograd import Tensor, no_grad  # noqa: E402
from refq.spotter import model as M  # noqa: E402
from refq.spotter.decode import detect_boxes, spot_batch  # noqa: E402
from refq.spotter.evaluate import detection_counts, end_to_end_counts  # noqa: E402
from refq.spotter.infer import load_spotter  # noqa: E402
from refq.spotter.overlay import draw_overlay  # noqa: E402
from refq.spotter.synth import generate_scene  # noqa: E402

FIG = Path(__file__).resolve().parent / "figures"
FIG.mkdir(exist_ok=True)
SEED = 2022
params, cfg, manifest = load_spotter()
print("model:", cfg.tasks, "recognizer", cfg.recognizer, "parameters", M.param_count(params),
      "trained for", manifest["step"], "steps")  # expect: joint fcr ~532k parameters
print("trained by:", manifest["command"])

# %% [markdown]
# ## A held-out scene and its ground truth
# The scene uses the held-out fonts (never seen in training). Boxes are pixel-edge (x0, y0, x1, y1);
# "###" marks an unreadable word that the evaluation ignores.

# %%
image, words = generate_scene(np.random.default_rng(SEED), fonts="heldout")
print("seed", SEED, "image", image.shape, image.dtype)  # expect: (256, 256) uint8
for w in words:
    print("  GT", w.box, repr(w.text))
draw_overlay(image, [{"box": list(w.box), "text": w.text} for w in words], FIG / "03_ground_truth.png")

# %% [markdown]
# ## Shared features and the score map
# The backbone has stride 4: a 256 x 256 image gives a 64 x 64 map of 64 channels. The detection head
# turns it into a text score per feature pixel (trained with dice on the *shrunk* word boxes) and four
# distances to the word's edges.

# %%
with no_grad():
    feats = M.backbone(params, Tensor(M.normalize_images(image)))  # [1, 64, 64, 64]
    score_logits, geo = M.det_head(params, cfg, feats)  # [1, 1, 64, 64], [1, 4, 64, 64]
score = 1 / (1 + np.exp(-score_logits.data[0, 0]))
print("features", feats.shape, "score map", score.shape, "pixels > 0.8:", int((score > 0.8).sum()))
boxes, box_scores = detect_boxes(score, geo.data[0], cfg.stride, image.shape)
print("detected boxes after locality-aware NMS:", len(boxes))  # expect: about the number of cared GT words
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
axes[0].imshow(image, cmap="gray")
axes[0].set_title("scene")
axes[1].imshow(score, cmap="magma", vmin=0, vmax=1)
axes[1].set_title("text score (stride 4)")
fig.savefig(FIG / "03_score_map.png", dpi=100, bbox_inches="tight")

# %% [markdown]
# ## Text pooling
# Each box is resampled bilinearly from the shared features to height 8 and a width proportional to
# its aspect ratio (W_i = round(8 * 0.75 * w / h)); the batch is zero-padded to the widest word.

# %%
widths = M.roi_widths(cfg, boxes)
with no_grad():
    pooled = M.pool_rois(cfg, feats, boxes, np.zeros(len(boxes), np.int64), widths)  # [R, 64, 8, Wmax]
print("pooled", pooled.shape, "widths", widths.tolist())
fig, axes = plt.subplots(len(boxes), 1, figsize=(6, 1.2 * max(len(boxes), 1)), squeeze=False)
for r in range(len(boxes)):
    axes[r, 0].imshow(np.abs(pooled.data[r]).mean(axis=0)[:, :widths[r]], cmap="viridis", aspect="auto")
    axes[r, 0].set_axis_off()
fig.savefig(FIG / "03_pooled_features.png", dpi=100, bbox_inches="tight")

# %% [markdown]
# ## Per-column CTC probabilities and the best path
# The recognizer (three 3x3 conv stages with height-only pooling, then three dilated 1-D convs)
# scores every column; greedy decoding takes the arg-max per column, merges repeats, drops blanks.

# %%
with no_grad():
    logits = M.recognizer(params, cfg, pooled, widths).data  # [R, T, K]
alphabet = cfg.alphabet
r = int(np.argmax(widths))
probs = np.exp(logits[r, :widths[r]] - logits[r, :widths[r]].max(1, keepdims=True))
probs /= probs.sum(1, keepdims=True)
path = probs.argmax(1)
print("best path of the widest box:", "".join("-" if k == 0 else alphabet.chars[k - 1] for k in path))
fig, ax = plt.subplots(figsize=(8, 5))
ax.imshow(probs.T, cmap="Greys", aspect="auto", interpolation="nearest")
ax.plot(np.arange(len(path)), path, "r.", markersize=4)
ax.set_xlabel("column (CTC frame)")
ax.set_ylabel("class (0 = blank)")
fig.savefig(FIG / "03_ctc_columns.png", dpi=100, bbox_inches="tight")

# %% [markdown]
# ## The decoded words
# `spot_batch` runs the whole pipeline; the overlay colours each word against the ground truth
# (green: matched and read right, red: wrong or false, orange: missed, grey: on a "###" region).

# %%
spotted = spot_batch(params, cfg, [image])[0]
for w in spotted:
    print("  spotted", [round(v) for v in w["box"]], repr(w["text"]), round(w["score"], 3))
gt_boxes = np.array([w.box for w in words], float)
gt_texts = [w.text for w in words]
det_boxes = np.array([w["box"] for w in spotted], float).reshape(-1, 4)
print("detection", detection_counts(gt_boxes, gt_texts, det_boxes).sample_scores())
print("end-to-end", end_to_end_counts(gt_boxes, gt_texts, det_boxes, [w["text"] for w in spotted]).sample_scores())
print("overlay:", draw_overlay(image, spotted, FIG / "03_spotted.png", gt=words))
