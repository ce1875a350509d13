"""Seeded end-to-end training of the spotter on a pre-generated synthetic dataset (docs/spotter.md T5).

One step on a batch of B images (Sui et al. 2018: both tasks in one network):
    F = backbone(x);  S, G = det_head(F)                      -> L_det = w_cls dice + w_geo IoU   (losses.py)
    RoIs = jittered ground-truth words (every cared word); after `pred_from` of the steps, for half of the
           images the detector's own boxes matched to a GT word (IoU > 0.5) replace the GT box, so the
           recognizer also learns the boxes it will see at test time
    R = text_pool(F, RoIs);  logits = recognizer(R)            -> L_rec = CTC(logits, words, W_i)
    L = L_det + w_rec L_rec, one backward pass through the shared backbone.
Extra recognition words: the backbone's receptive field is 19 px, so a word's pooled features depend
only on its box plus a 16 px margin. `crop_words` more words per step (from anywhere in the training
set) are cut out with that margin and shelf-packed into canvases of the image size, which go through
the same backbone pass (recognition loss only). A canvas holds about 8-10 words where a scene holds
3.7, so recognition gets about twice the samples per backbone pixel -- what makes CPU training feasible.
Details: jitter of each box side uniform in +-`jitter` x box height (T5); W_i raised to the
CTC minimum L + repeats where the aspect rule gives fewer columns; words grouped by pooled width into
recognizer batches; Adam with linear warm-up and cosine decay; global gradient-norm clipping at 5 (CTC
spikes early, T5). Models with tasks 'det' or 'rec' drop the other loss (ablation).
Every `eval_every` steps the model is scored on a validation set and the checkpoint is written (so an
interrupted run leaves its latest weights and history behind).

References: Liu et al., "FOTS", CVPR 2018, Sec. 3.3-3.4 (joint training, recognition on GT RoIs);
Kingma & Ba, ICLR 2015 (Adam); Pascanu et al., "On the difficulty of training recurrent neural
networks", ICML 2013 (gradient-norm clipping); docs/spotter.md, T5.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import NamedTuple

import numpy as np

from refq.autograd import Tensor
from refq.autograd.optim import Adam, warmup_cosine_lr
from refq.io.npz import save_npz
from refq.spotter import model as M
from refq.spotter.boxes import aabb_iou
from refq.spotter.ctc import min_input_length
from refq.spotter.decode import detect_boxes, pad_boxes, width_batches
from refq.spotter.infer import evaluate_arrays
from refq.spotter.losses import det_loss, rec_loss
from refq.spotter.targets import batch_targets
from refq.spotter.train_config import TrainConfig


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator, amount: float, image_hw: tuple) -> np.ndarray:
    """Each side of each box [R, 4] moved by uniform(-amount, amount) x the box height, kept inside the image."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h = (b[:, 3] - b[:, 1])[:, None]  # [R, 1]
    out = b + rng.uniform(-amount, amount, size=b.shape) * h  # [R, 4]
    H, W = image_hw
    out = np.clip(out, 0.0, [W, H, W, H])
    bad = (out[:, 2] - out[:, 0] < 2) | (out[:, 3] - out[:, 1] < 2)
    out[bad] = b[bad]  # a jitter that collapses a box is undone
    return out


def matched_predictions(score: np.ndarray, geo: np.ndarray, stride: int, words, image_hw: tuple) -> dict:
    """{GT word index: predicted box} for cared words that a detected box overlaps with IoU > 0.5."""
    boxes, _ = detect_boxes(score, geo, stride, image_hw)
    care = [i for i, w in enumerate(words) if not w.dnc]
    if len(boxes) == 0 or not care:
        return {}
    iou = aabb_iou(np.array([words[i].box for i in care], np.float64), boxes)  # [G, D]
    best = iou.argmax(axis=1)  # [G]
    return {i: boxes[best[k]] for k, i in enumerate(care) if iou[k, best[k]] > 0.5}


def crop_region(box, margin: int, stride: int) -> tuple[int, int, int, int]:
    """The box grown by margin, its corners snapped outwards to the stride grid (may extend past the image)."""
    x0 = int(np.floor((box[0] - margin) / stride)) * stride
    y0 = int(np.floor((box[1] - margin) / stride)) * stride
    x1 = int(np.ceil((box[2] + margin) / stride)) * stride
    y1 = int(np.ceil((box[3] + margin) / stride)) * stride
    return x0, y0, x1, y1


class WordCrops(NamedTuple):
    """Word crops shelf-packed into canvases (`pack_word_crops`): extra recognition samples for a step."""

    canvases: np.ndarray  # uint8 [n, H, W]
    boxes: np.ndarray  # [R, 4] in canvas pixels
    owner: np.ndarray  # int64 [R] canvas index
    texts: list  # [R] transcriptions


def pack_word_crops(images: np.ndarray, words: list, picks, rng, tcfg: TrainConfig, stride: int,
                    pad: float = 0.0) -> WordCrops:
    """Jittered, `pad`-widened word crops (box + margin) of picks [(image, word)] shelf-packed into canvases.

    The backbone sees only 9 px around a pixel, so a word's pooled features depend only on its crop with the
    margin: packing crops costs a fraction of whole images per recognition sample (exactly the same features
    unless the crop reaches past the image border, where the full image's zero padding of the inner layers
    differs slightly). The canvas and crop parts outside the image are gray 128 (~0 after normalisation).
    Returns WordCrops(canvases uint8 [n, H, W], boxes [R, 4] in canvas pixels, canvas index [R], texts);
    crops wider or higher than a canvas are skipped.
    """
    H, W = images.shape[1:]
    crops = []
    for i, j in picks:
        box = pad_boxes(jitter_boxes(np.array([words[i][j].box]), rng, tcfg.jitter, (H, W)), pad)[0]
        x0, y0, x1, y1 = crop_region(box, tcfg.crop_margin, stride)
        pixels = np.full((y1 - y0, x1 - x0), 128, np.uint8)  # outside the image: gray, as zero padding
        u0, v0, u1, v1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        pixels[v0 - y0:v1 - y0, u0 - x0:u1 - x0] = images[i, v0:v1, u0:u1]
        crops.append((pixels, box - [x0, y0, x0, y0], words[i][j].text))
    crops.sort(key=lambda c: -c[0].shape[0])  # tallest first: shelves of similar height
    canvases, boxes, owner, texts = [], [], [], []
    x = y = shelf = H  # forces a new canvas for the first crop
    for pixels, box, text in crops:
        h, w = pixels.shape
        if h > H or w > W:
            continue
        if x + w > W:  # next shelf
            x, y, shelf = 0, y + shelf, h
        if y + h > H:  # next canvas
            canvases.append(np.full((H, W), 128, np.uint8))
            x, y, shelf = 0, 0, h
        canvases[-1][y:y + h, x:x + w] = pixels
        boxes.append(box + [x, y, x, y])
        owner.append(len(canvases) - 1)
        texts.append(text)
        x += w
    return WordCrops(np.array(canvases, np.uint8).reshape(-1, H, W), np.array(boxes, np.float64).reshape(-1, 4),
                     np.array(owner, np.int64), texts)


def sample_rois(cfg: M.SpotterConfig, tcfg: TrainConfig, batch_words, image_hw, rng, predicted=None):
    """Cared words of a batch: RoI boxes [R, 4] (jittered GT or matched predictions, widened by cfg.rec_pad),
    image index [R], texts."""
    boxes, owner, texts = [], [], []
    for b, words in enumerate(batch_words):
        pred = predicted[b] if predicted is not None else {}
        for i, w in enumerate(words):
            if w.dnc or not cfg.alphabet.normalize(w.text):
                continue
            boxes.append(pred[i] if i in pred else jitter_boxes(np.array([w.box]), rng, tcfg.jitter, image_hw)[0])
            owner.append(b)
            texts.append(w.text)
    return pad_boxes(np.array(boxes, np.float64).reshape(-1, 4), cfg.rec_pad), np.array(owner, np.int64), texts


def ctc_widths(cfg: M.SpotterConfig, boxes: np.ndarray, labels: list[np.ndarray]) -> np.ndarray:
    """Pooled widths [R] of the boxes, raised where needed to the CTC minimum L + repeats of their labels."""
    need = np.array([min_input_length(lab) for lab in labels], np.int64)  # [R]
    return np.maximum(M.roi_widths(cfg, boxes), need)


def recognition_loss(p: dict, cfg: M.SpotterConfig, tcfg: TrainConfig, feats, boxes, owner, texts) -> Tensor:
    """CTC 'mean' loss over all RoIs, computed in batches of similar pooled width (each weighted by its share)."""
    labels, lengths = cfg.alphabet.encode_batch([cfg.alphabet.normalize(t) for t in texts])
    widths = ctc_widths(cfg, boxes, [labels[i, :lengths[i]] for i in range(len(texts))])
    total = None
    for idx in width_batches(widths, tcfg.rec_batch):
        pooled = M.pool_rois(cfg, feats, boxes[idx], owner[idx], widths[idx])  # [n, C, 8, T]
        logits = M.recognizer(p, cfg, pooled, widths[idx])  # [n, T, K]
        part = rec_loss(logits, labels[idx], lengths[idx], widths[idx]) * (len(idx) / len(boxes))  # its share
        total = part if total is None else total + part
    return total


def detection_loss(p: dict, cfg: M.SpotterConfig, tcfg: TrainConfig, feats, batch_words, image_hw, rng,
                   use_pred: bool) -> tuple[Tensor, dict, list | None]:
    """L_det of the detection head on the batch's features, its parts, and (when `use_pred`) for half of the
    images the predicted boxes matched to GT words, for the recognizer to read instead of the GT boxes."""
    score_logits, geo = M.det_head(p, cfg, feats)  # [B, 1, h, w], [B, 4, h, w]
    targets = batch_targets([[w.box for w in ws] for ws in batch_words],
                            [[w.dnc for w in ws] for ws in batch_words], feats.shape[2:], cfg.stride)
    l_det, parts = det_loss(score_logits, geo, targets, tcfg.w_cls, tcfg.w_geo)
    predicted = None
    if use_pred:
        prob = 1.0 / (1.0 + np.exp(-score_logits.data[:, 0].astype(np.float64)))  # [B, h, w]
        predicted = [matched_predictions(prob[b], geo.data[b], cfg.stride, ws, image_hw)
                     if rng.random() < 0.5 else {} for b, ws in enumerate(batch_words)]
    return l_det, parts, predicted


def recognition_rois(cfg: M.SpotterConfig, tcfg: TrainConfig, batch_words, image_hw, rng, predicted,
                     crops: WordCrops | None, batch: int):
    """The words the recognizer reads this step: the batch's RoIs (`sample_rois`), then the packed crops
    (their canvases follow the `batch` images in the feature batch), at most tcfg.max_rois of them."""
    boxes, owner, texts = sample_rois(cfg, tcfg, batch_words, image_hw, rng, predicted)
    if crops is not None and len(crops.canvases):
        boxes = np.concatenate([boxes, crops.boxes])
        owner = np.concatenate([owner, crops.owner + batch])
        texts = texts + list(crops.texts)
    if len(boxes) > tcfg.max_rois:
        keep = np.sort(rng.choice(len(boxes), tcfg.max_rois, replace=False))
        boxes, owner, texts = boxes[keep], owner[keep], [texts[k] for k in keep]
    return boxes, owner, texts


def joint_loss(l_det: Tensor | None, l_rec: Tensor | None, w_rec: float) -> Tensor | None:
    """L = L_det + w_rec L_rec; a detection-only or recognition-only model (or a step without words) has one term."""
    if l_rec is None:
        return l_det
    if l_det is None:
        return l_rec * w_rec
    return l_det + l_rec * w_rec


def train_step(p: dict, cfg: M.SpotterConfig, tcfg: TrainConfig, images: np.ndarray, batch_words, rng,
               use_pred: bool, crops: WordCrops | None = None) -> tuple[Tensor, dict]:
    """Joint loss of one batch (graph recorded) and its parts as floats.

    crops: extra recognition words packed into canvases (`pack_word_crops`); the canvases share the
    backbone pass with the images but get no detection loss.
    """
    B = len(images)
    crops = crops if crops is not None and cfg.has_rec else None
    canvases = crops.canvases if crops is not None else np.zeros((0,) + images.shape[1:], np.uint8)
    feats_all = M.backbone(p, Tensor(M.normalize_images(np.concatenate([images, canvases]))))  # [B + n, C, h, w]
    feats = feats_all if len(canvases) == 0 else feats_all[0:B]  # [B, C, h, w]
    stats, predicted, l_det, l_rec = {}, None, None, None
    if cfg.has_det:
        l_det, parts, predicted = detection_loss(p, cfg, tcfg, feats, batch_words, images.shape[1:], rng, use_pred)
        stats.update(parts)
    if cfg.has_rec:
        boxes, owner, texts = recognition_rois(cfg, tcfg, batch_words, images.shape[1:], rng, predicted, crops, B)
        if len(boxes):
            l_rec = recognition_loss(p, cfg, tcfg, feats_all, boxes, owner, texts)  # L_rec = CTC, 'mean'
            stats.update(ctc=float(l_rec.data), rois=len(boxes))
    return joint_loss(l_det, l_rec, tcfg.w_rec), stats


def word_picks(cfg: M.SpotterConfig, words: list) -> np.ndarray:
    """(image, word) index pairs [P, 2] of every cared word with a non-empty text in the alphabet."""
    return np.array([(i, j) for i, ws in enumerate(words) for j, w in enumerate(ws)
                     if not w.dnc and cfg.alphabet.normalize(w.text)], np.int64).reshape(-1, 2)


def clip_gradients(params: dict, max_norm: float) -> float:
    """Scale all gradients so that their global L2 norm is at most max_norm; returns the norm before clipping."""
    grads = [t.grad for t in params.values() if t.grad is not None]
    norm = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads)))
    if norm > max_norm:
        for t in params.values():
            if t.grad is not None:
                t.grad = t.grad * np.float32(max_norm / norm)
    return norm


def train(cfg: M.SpotterConfig, tcfg: TrainConfig, images: np.ndarray, words: list, rng: np.random.Generator,
          val=None, save=None, log=None, init: dict | None = None) -> tuple[dict, list[dict]]:
    """Train from scratch (or from `init` params); returns (float32 params, history of evaluations).

    images: uint8 [N, H, W]; words: per image a list of SynthWord; val: (images, words) or None;
    save(params, history, step): called at every evaluation and at the end.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(words):
        raise ValueError(f"train: images {images.shape} {images.dtype} with {len(words)} word lists, "
                         f"expected uint8 [N, H, W] and N lists")
    params = M.as_tensors(init if init is not None else M.init_params(cfg, rng), requires_grad=True)
    opt = Adam(params, lr=tcfg.lr)
    history, start, running = [], time.time(), {}
    pred_step = int(tcfg.pred_from * tcfg.steps)
    order, cursor = rng.permutation(len(images)), 0
    picks = word_picks(cfg, words)
    for step in range(1, tcfg.steps + 1):
        if cursor + tcfg.batch_size > len(order):
            order, cursor = rng.permutation(len(images)), 0
        idx = order[cursor:cursor + tcfg.batch_size]
        cursor += tcfg.batch_size
        crops = None
        if cfg.has_rec and tcfg.crop_words > 0 and len(picks):
            chosen = picks[rng.choice(len(picks), min(tcfg.crop_words, len(picks)), replace=False)]
            crops = pack_word_crops(images, words, chosen, rng, tcfg, cfg.stride, cfg.rec_pad)
        loss, stats = train_step(params, cfg, tcfg, images[idx], [words[i] for i in idx], rng,
                                 use_pred=cfg.has_det and cfg.has_rec and step > pred_step, crops=crops)
        opt.zero_grad()
        loss.backward()
        stats["grad_norm"] = clip_gradients(params, tcfg.clip)
        opt.lr = warmup_cosine_lr(step - 1, tcfg.warmup, tcfg.steps, tcfg.lr)
        opt.step()
        stats["loss"] = float(loss.data)
        for k, v in stats.items():
            running.setdefault(k, []).append(v)
        if step % 20 == 0 or step == 1:
            means = " ".join(f"{k} {np.mean(v):.4g}" for k, v in running.items())
            log(f"step {step}/{tcfg.steps} {means} lr {opt.lr:.2e} ({(time.time() - start) / step:.2f} s/step, "
                f"{time.time() - start:.0f} s)")
            running = {}
        if step % tcfg.eval_every == 0 or step == tcfg.steps:
            arrays = {k: v.data.astype(np.float32) for k, v in params.items()}
            record = {"step": step, "seconds": round(time.time() - start, 1)}
            if val is not None:
                metrics = evaluate_arrays(arrays, cfg, val[0][:tcfg.eval_images], val[1][:tcfg.eval_images])
                record.update(summarize(metrics))
                log(f"eval at step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                        if isinstance(v, float) and k != "seconds"))
            history.append(record)
            if save is not None:
                save(arrays, history, step)
    return {k: v.data.astype(np.float32) for k, v in params.items()}, history


def summarize(metrics: dict) -> dict:
    """Flat headline numbers of an `evaluate_arrays` result (what the history and the tables record)."""
    out = {}
    if metrics.get("detection"):
        d = metrics["detection"]
        out.update(det_p=d["precision"], det_r=d["recall"], det_f=d["hmean"],
                   images_per_second=metrics["images_per_second"])
    if metrics.get("end_to_end"):
        out["e2e_f"] = metrics["end_to_end"]["hmean"]
    if metrics.get("recognition"):
        out.update(word_acc=metrics["recognition"]["word_accuracy"], cer=metrics["recognition"]["cer"])
    return out


def save_checkpoint(path, params: dict, cfg: M.SpotterConfig, tcfg: TrainConfig, history: list, step: int,
                    command: str, seed: int, data: str, init: dict | None = None) -> None:
    """Write params with a manifest (config, training config, command, seed, data, history) via save_npz.

    init: the manifest of the checkpoint training started from (--init), kept so that the file records
    every command needed to reproduce it.
    """
    manifest = {"model": "refq.spotter", "config": cfg.to_dict(), "train_config": asdict(tcfg), "command": command,
                "seed": seed, "data": data, "step": step, "history": history,
                "parameters": M.param_count(params)}
    if init is not None:
        manifest["init"] = {k: init[k] for k in ("command", "seed", "data", "step", "history", "init") if k in init}
    save_npz(path, params, manifest)
