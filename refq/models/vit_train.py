"""Supervised training of the small ViT that ships with refq (the SARDFQ subject model).

ImageNet DeiT weights cannot be downloaded here, so refq trains its own ViT on
Fashion-MNIST with the hand-written autograd: AdamW, linear warm-up + cosine
decay, random-crop (pad 2) and horizontal-flip augmentation, cross-entropy.
Recipe in the spirit of DeiT (Touvron et al. 2021, Sec. 6: AdamW, cosine schedule,
warm-up), scaled down to a 28x28 input. Optionally the weights are averaged along the
trajectory by an exponential moving average (Polyak & Juditsky 1992; DeiT's model EMA),
and the average is what gets evaluated and returned. `average_weights` is the other kind of
averaging: a uniform average of finished checkpoints fine-tuned from a common ancestor (the
"uniform soup" of Wortsman et al. 2022, "Model soups", Sec. 2). `val_split` holds out a fixed
part of the training images, so that choices between runs need not be made on the test set.
`train` can hand its full state to a callback after every epoch and continue from such a state,
bit for bit as if it had not stopped (`resume`), so that runs of hours survive an interruption; `check_resume`
and `trained_manifest` are the policy of `refq vit train --resume` and of the command lineage a checkpoint keeps.
The same loop trains the convnet teacher (refq.models.cnn) and, given a teacher, distils it into the ViT
(DeiT Sec. 4, through the class token; losses in refq.models.distill).
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import numpy as np

from refq.autograd import Tensor, no_grad
from refq.autograd import functional as F
from refq.autograd.optim import AdamW, warmup_cosine_lr
from refq.models import cnn, vit
from refq.models.distill import DISTILLATIONS, distillation_loss
from refq.models.ops import ModelOps


AUGMENTATIONS = ("crop-flip", "flip", "none")
VAL_SPLIT_SEED = 20261124  # fixed, not the run's seed: every stage of a chain holds out the same images


def val_split(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of n training images, `size` of them held out for validation.

    The split depends only on (n, size), so a fine-tune started from a checkpoint trained with the same
    split never sees that checkpoint's validation images. Both index arrays are sorted."""
    if not 0 < size < n:
        raise ValueError(f"val_split: size={size}, expected 0 < size < {n} (the number of training images)")
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(n)
    return np.sort(order[size:]), np.sort(order[:size])


def augment(x: np.ndarray, rng: np.random.Generator, pad: int = 2) -> np.ndarray:
    """Random shift by up to `pad` pixels (background padding; pad=0: none) and random horizontal flip, per image."""
    B, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=x.min())  # [B, C, H+2p, W+2p]
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, B))
    rows = dy[:, None] + np.arange(H)[None, :]  # [B, H]
    cols = dx[:, None] + np.arange(W)[None, :]  # [B, W]
    out = padded[np.arange(B)[:, None, None, None], np.arange(C)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]  # [B, C, H, W]
    flip = rng.random(B) < 0.5
    out[flip] = out[flip, :, :, ::-1]
    return out


def model_of(cfg):
    """The model module (init_params, check_params, forward) that a config belongs to."""
    if isinstance(cfg, vit.ViTConfig):
        return vit
    if isinstance(cfg, cnn.CNNConfig):
        return cnn
    raise ValueError(f"model_of: unknown config type {type(cfg).__name__}")


def predict(params: dict, cfg, x: np.ndarray, batch_size: int = 500,
            ops: ModelOps = vit.FLOAT_OPS) -> np.ndarray:
    """Logits of a ViT (through `ops`) or CNN for normalised images x [N, C, H, W], in batches, without a graph."""
    out = []
    with no_grad():
        for s in range(0, len(x), batch_size):
            xb = Tensor(x[s:s + batch_size])
            logits = vit.forward(params, cfg, xb, ops=ops) if isinstance(cfg, vit.ViTConfig) else \
                model_of(cfg).forward(params, cfg, xb)
            out.append(logits.data)
    return np.concatenate(out) if out else np.zeros((0, cfg.num_classes), np.float32)


def accuracy(params: dict, cfg, x: np.ndarray, y: np.ndarray, batch_size: int = 500,
             ops: ModelOps = vit.FLOAT_OPS) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((predict(params, cfg, x, batch_size, ops).argmax(-1) == y).mean())


def ema_update(average: dict, params: dict, decay: float) -> dict:
    """One step of the exponential moving average: decay * average + (1 - decay) * params, as new arrays."""
    assert average.keys() == params.keys()
    return {k: (decay * average[k] + (1.0 - decay) * params[k]).astype(np.float32) for k in average}


def average_weights(checkpoints: list[dict]) -> dict:
    """Uniform average of weight dicts with the same names and shapes (a uniform model soup), in float64,
    returned as new float32 arrays. Meant for runs that share an ancestor, which keeps them in one basin."""
    if not checkpoints:
        raise ValueError("average_weights needs at least one checkpoint, got none")
    names = checkpoints[0].keys()
    for i, params in enumerate(checkpoints[1:], start=1):
        if params.keys() != names:
            raise ValueError(f"checkpoint {i} has parameters {sorted(params.keys() ^ names)} that checkpoint 0 "
                             "does not share (or lacks)")
        for k in names:
            if params[k].shape != checkpoints[0][k].shape:
                raise ValueError(f"checkpoint {i}: {k} has shape {params[k].shape}, checkpoint 0 has "
                                 f"{checkpoints[0][k].shape}")
    return {k: (sum(params[k].astype(np.float64) for params in checkpoints) / len(checkpoints)).astype(np.float32)
            for k in names}


BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


def training_state(params: dict, opt, average: dict | None, rng: np.random.Generator, epoch: int, step: int,
                   history: list, elapsed: float) -> tuple[dict, dict]:
    """(arrays, meta) that `train(resume=...)` continues from: weights, AdamW moments, the moving average,
    the generator's state, the epochs done and the history so far. Arrays are copies."""
    arrays = {}
    for (name, p), state in zip(params.items(), opt.state):
        arrays["params:" + name] = p.data.copy()
        for moment in ("m", "v"):
            if moment in state:
                arrays[f"adam_{moment}:" + name] = np.array(state[moment], copy=True)
    for name, v in (average or {}).items():
        arrays["ema:" + name] = v.copy()
    meta = {"epoch": epoch, "step": step, "adam_t": {n: st.get("t", 0) for n, st in zip(params, opt.state)},
            "rng": rng.bit_generator.state, "history": [dict(h) for h in history], "elapsed": elapsed}
    return arrays, meta


def _restore_rng(state: dict) -> np.random.Generator:
    """A new Generator in the saved state (the caller's generator is left alone)."""
    name = state.get("bit_generator")
    if name not in BIT_GENERATORS:
        raise ValueError(f"resume: bit generator {name!r}, expected one of {BIT_GENERATORS}")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def train(cfg, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
          rng: np.random.Generator, epochs: int = 15, batch_size: int = 128, lr: float = 1e-3,
          weight_decay: float = 0.05, warmup_epochs: float = 1.0, eval_subset: int = 2000,
          log=None, init: dict | None = None, augmentation: str = "crop-flip",
          ema: float = 0.0, x_val: np.ndarray | None = None,
          y_val: np.ndarray | None = None, teacher: tuple | None = None, distill: str = "hard",
          distill_weight: float = 0.5, distill_tau: float = 1.0, resume: tuple | None = None,
          on_epoch=None) -> tuple[dict, list[dict]]:
    """Train a ViT or CNN (by cfg's type) from scratch (or from `init` params); returns (float32 params,
    per-epoch history).

    x_* are normalised float32 images. The init arrays are copied, never modified. augmentation:
    'crop-flip' (shift by up to 2 px and flip), 'flip' (horizontal flip only) or 'none'. ema in (0, 1): keep
    an exponential moving average of the weights after every step (starting from the initial weights); it is
    evaluated each epoch and returned instead of the last iterate. ema=0: no averaging.
    Monitoring: with (x_val, y_val), every epoch reports top-1 on the whole validation set and the test set
    is evaluated once, at the end; without, every epoch reports top-1 on the first `eval_subset` test images
    (the full test set at the end), which makes the test set double as the monitor.
    teacher=(params, cfg) of a frozen model: the loss becomes `distillation_loss(distill, ...)` on the teacher's
    logits for the same augmented batch (distill_weight and distill_tau apply to 'soft').
    Interruption: after every epoch but the last, on_epoch(arrays, meta) receives `training_state(...)`;
    resume=(arrays, meta) from it continues with the next epoch (the same arguments must be given).
    """
    if (x_val is None) != (y_val is None):
        raise ValueError("train: give both x_val and y_val, or neither")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"train: augmentation={augmentation!r}, expected one of {AUGMENTATIONS}")
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"train: ema={ema}, expected a decay in [0, 1)")
    if distill not in DISTILLATIONS:
        raise ValueError(f"train: distill={distill!r}, expected one of {DISTILLATIONS}")
    model = model_of(cfg)
    if teacher is not None:
        model_of(teacher[1]).check_params(teacher[0], teacher[1])
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if init is None:
        initial = model.init_params(cfg, rng)
    else:
        model.check_params(init, cfg)
        initial = {k: np.array(v, np.float32) for k, v in init.items()}  # copies: init is never modified
    params = {k: Tensor(v, requires_grad=True) for k, v in initial.items()}
    average = {k: v.copy() for k, v in initial.items()} if ema > 0 else None

    def weights() -> dict:
        """What is evaluated and returned: the moving average if kept, else the current iterate."""
        return average if average is not None else {k: v.data for k, v in params.items()}

    opt = AdamW(list(params.values()), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(x_train) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"train: {len(x_train)} training images is less than one batch of batch_size={batch_size}")
    total = epochs * steps_per_epoch
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
    history, step, first_epoch, start = [], 0, 0, time.time()
    if resume is not None:
        arrays, meta = resume
        want = {"params:" + k for k in initial} | ({"ema:" + k for k in initial} if ema > 0 else set())
        have = {k for k in arrays if k.startswith(("params:", "ema:"))}
        if want != have:
            raise ValueError(f"resume: the saved state lacks {sorted(want - have)[:3]} and has {sorted(have - want)[:3]}"
                             " that this run does not (another model, or --ema differs)")
        if not 0 < meta["epoch"] < epochs:
            raise ValueError(f"resume: the saved state is after epoch {meta['epoch']} of a run of {epochs} epochs")
        for (name, p), state in zip(params.items(), opt.state):
            if arrays["params:" + name].shape != p.data.shape:
                raise ValueError(f"resume: {name} has shape {arrays['params:' + name].shape} in the saved state, "
                                 f"the model needs {p.data.shape}")
            p.data = arrays["params:" + name].astype(np.float32)
            if meta["adam_t"][name]:
                state.update(t=meta["adam_t"][name], m=arrays["adam_m:" + name], v=arrays["adam_v:" + name])
        if average is not None:
            average = {k: arrays["ema:" + k].astype(np.float32) for k in initial}
        rng, step, first_epoch = _restore_rng(meta["rng"]), meta["step"], meta["epoch"]
        history, start = [dict(h) for h in meta["history"]], time.time() - meta["elapsed"]
        log(f"resuming after epoch {first_epoch} of {epochs} (step {step})")
    for epoch in range(first_epoch, epochs):
        order = rng.permutation(len(x_train))
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * batch_size:(s + 1) * batch_size]
            xb = x_train[idx]  # [B, 1, 28, 28]
            if augmentation != "none":
                xb = augment(xb, rng, pad=2 if augmentation == "crop-flip" else 0)
            logits = model.forward(params, cfg, Tensor(xb))  # [B, classes]
            if teacher is None:
                loss = F.cross_entropy(logits, y_train[idx])
            else:
                loss = distillation_loss(distill, logits, y_train[idx], predict(*teacher, xb, len(xb)),
                                         distill_weight, distill_tau)
            opt.zero_grad()
            loss.backward()
            opt.lr = warmup_cosine_lr(step, warmup, total, lr)
            opt.step()
            if average is not None:
                average = ema_update(average, {k: v.data for k, v in params.items()}, ema)
            losses.append(loss.item())
            step += 1
            if s % 50 == 0:
                log(f"epoch {epoch + 1}/{epochs} step {s}/{steps_per_epoch} loss {np.mean(losses[-50:]):.4f} "
                    f"lr {opt.lr:.2e} ({time.time() - start:.0f} s)")
        arrays = weights()
        if epoch + 1 == epochs:
            n_eval = len(x_test)  # the full test set only at the end
        else:
            n_eval = 0 if x_val is not None else min(len(x_test), eval_subset)  # the test subset as monitor
        record, shown = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}, []
        if x_val is not None:
            record["val_top1"], record["n_val"] = accuracy(arrays, cfg, x_val, y_val), len(y_val)
            shown.append(f"validation top-1 {100 * record['val_top1']:.2f}% on {len(y_val)} images")
        if n_eval:
            record["test_top1"] = accuracy(arrays, cfg, x_test[:n_eval], y_test[:n_eval])
            record["n_eval"] = n_eval
            shown.append(f"test top-1 {100 * record['test_top1']:.2f}% on {n_eval} images")
        record["seconds"] = round(time.time() - start, 1)
        history.append(record)
        log(f"epoch {epoch + 1}: train loss {np.mean(losses):.4f}, {', '.join(shown)} ({time.time() - start:.0f} s)")
        if on_epoch is not None and epoch + 1 < epochs:
            on_epoch(*training_state(params, opt, average, rng, epoch + 1, step, history, time.time() - start))
    return {k: v.astype(np.float32) for k, v in weights().items()}, history


# ---- lineage: how a checkpoint records the commands that made it, and how --resume is checked -------------
LINEAGE_KEYS = ("command", "seed", "test_top1", "history", "val_size", "init", "soup", "teacher")


def state_path(out) -> Path:
    """Where a run writing `out` keeps its state between epochs: `out` with the suffix .state.npz."""
    out = Path(out)
    return out.with_name(out.stem + ".state.npz")


def command_line(argv, drop: str | None = None) -> str:
    """The `refq ...` command of argv (without the flag `drop`), as a manifest records it."""
    return "refq " + " ".join(shlex.quote(str(a)) for a in argv if a != drop)


def check_resume(path: Path, meta: dict | None, command: str) -> None:
    """ValueError unless the saved state at `path` (meta None: absent) was written by the same `command`."""
    if meta is None:
        raise ValueError(f"--resume: no saved state {path} (it is written after each epoch of a run with the "
                         "same --out)")
    if meta.get("command") != command:
        raise ValueError(f"--resume: {path} was written by `{meta.get('command')}`, not `{command}`; "
                         "resume with the same arguments")


def lineage(manifest: dict) -> dict:
    """What a checkpoint made from another one keeps of that one's manifest: how it was made, recursively."""
    return {k: manifest[k] for k in LINEAGE_KEYS if k in manifest}


def held_out_size(manifest: dict) -> int:
    """Training images a checkpoint held out, over its whole init chain (0: none, or not the same in every stage)."""
    sizes = set()
    while manifest:
        sizes.add(manifest.get("val_size", 0))
        manifest = manifest.get("init")
    return sizes.pop() if len(sizes) == 1 else 0


def check_held_out(flag: str, path, manifest: dict, val_size: int) -> None:
    """ValueError if the checkpoint given as `flag` held out other images than this run's `val_size` ones."""
    if val_size and held_out_size(manifest) != val_size:
        raise ValueError(f"{flag} {path} was trained with --val-size {held_out_size(manifest)}, not {val_size}: "
                         "it has seen (some of) the images this run would validate on")


def trained_manifest(cfg, command: str, seed: int, history: list, resumed: bool = False, val_size: int = 0,
                     init: dict | None = None, teacher: tuple | None = None) -> dict:
    """The manifest of a finished run: config, command, scores, and the lineage of its --init manifest and of
    its teacher (path, manifest)."""
    manifest = {"config": cfg.to_dict(), "command": command, **({"resumed": True} if resumed else {}),
                "seed": seed, "test_top1": history[-1]["test_top1"], "history": history}
    if val_size:
        manifest["val_size"], manifest["val_top1"] = val_size, history[-1]["val_top1"]
    if init is not None:
        manifest["init"] = lineage(init)
    if teacher is not None:
        manifest["teacher"] = {"path": teacher[0], **lineage(teacher[1])}
    return manifest
