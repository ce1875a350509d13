"""Block-wise reconstruction: fine-tune each quantized block to reproduce the FP block output (SARDFQ, quantization).

For the patch embedding (a single layer), then every block l = 1..L in order, then the head (a single
layer), on the calibration images:

    cache   X_in  = the input of the unit in the *quantized* model (earlier units already reconstructed)
            X_fp  = the output of the unit in the FP model on the same images
    train   the Linear weights and biases of the unit (LayerNorm and quantizer ranges frozen) for `iters`
            Adam steps (lr 4e-5, cosine to 0, T_max = iters) on
                lp_loss(unit_q(X_in), X_fp) = mean over (b, c, ...) of sum over axis 1 of (pred - tgt)^2
            (I&S-ViT's lp_loss with p = 2: for block outputs [B, N, D] the sum runs over the N tokens),
            through the straight-through weight quantizer (refq.quant.fake_quant).
    Each step uses `batch_size` cached samples drawn without replacement (all of them when there are fewer).

The units' FP targets come from the FP chain (FP inputs), their inputs from the quantized chain, as in
I&S-ViT's last stage (last_stage = True). SARDFQ states 100 iterations, lr 4e-5 and cosine decay.

References: SARDFQ, arXiv:2412.16553 (quantized network learning); I&S-ViT, arXiv:2311.10126
(block_reconstruction / layer_reconstruction, lp_loss); Li et al., "BRECQ", ICLR 2021 (block reconstruction);
docs/sardfq.md, S5.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from refq.autograd import Tensor, no_grad
from refq.autograd import functional as F
from refq.autograd.optim import Adam, cosine_lr
from refq.models import vit
from refq.sardfq.quant_vit import QuantOps

BLOCK_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def lp_loss(pred, target, p: float = 2.0) -> Tensor:
    """I&S-ViT lp_loss: |pred - target|^p summed over axis 1, averaged over every other axis."""
    d = F.abs(F.sub(pred, target)) if p != 2 else F.sub(pred, target)
    e = F.mul(d, d) if p == 2 else F.pow(d, p)
    return F.mean(F.sum(e, axis=1))


def _train_unit(keys: list[str], params: dict, fn, x_in: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                iters: int, lr: float, batch_size: int) -> tuple[dict, float, float]:
    """Adam on params[keys] minimising lp_loss(fn(p, x_batch), target_batch); returns (new arrays, loss before, after)."""
    trained = {k: Tensor(np.array(params[k], np.float32), requires_grad=True) for k in keys}
    opt = Adam(list(trained.values()), lr=lr)

    def full_loss():
        with no_grad():
            return float(lp_loss(fn({**params, **trained}, Tensor(x_in)), target).item())

    before = full_loss()
    n = len(x_in)
    for step in range(iters):
        idx = rng.permutation(n)[:batch_size] if batch_size < n else np.arange(n)
        loss = lp_loss(fn({**params, **trained}, Tensor(x_in[idx])), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.lr = cosine_lr(step, iters, lr)
        opt.step()
    return {k: t.data.astype(np.float32) for k, t in trained.items()}, before, full_loss()


def fp_targets(params: dict, cfg: vit.ViTConfig, x: np.ndarray) -> dict:
    """FP patch-embedding output [B, P, D], every block output [B, N, D] and the head logits of the FP chain."""
    with no_grad():
        w = params["patch_embed.proj.weight"].reshape(cfg.embed_dim, -1)  # [D, C*p*p]
        out = {"patch_embed": F.linear(vit.patchify(Tensor(x), cfg.patch_size), w, params["patch_embed.proj.bias"]).data}
        h = vit.embed(params, cfg, Tensor(x))
        for i in range(cfg.depth):
            h, _ = vit.block(params, cfg, i, h)
            out[f"block{i}"] = h.data
        normed = F.layer_norm(h, params["norm.weight"], params["norm.bias"], cfg.eps).data  # [B, N, D]
        out["head"] = F.linear(normed[:, 0], params["head.weight"], params["head.bias"]).data
        if cfg.distilled:
            out["head_dist"] = F.linear(normed[:, 1], params["head_dist.weight"], params["head_dist.bias"]).data
    return out


def reconstruct(params: dict, cfg: vit.ViTConfig, ops: QuantOps, calib_x: np.ndarray, rng: np.random.Generator,
                iters: int = 100, lr: float = 4e-5, batch_size: int = 32, log=None) -> tuple[dict, list[dict]]:
    """Sequential reconstruction of patch embedding, blocks and head; returns (new params, per-unit log)."""
    if iters < 1:
        return dict(params), []
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if ops.integer:
        raise ValueError("reconstruct: ops.integer is on; reconstruction runs on the fake-quant model")
    calib_x = np.asarray(calib_x, np.float32)
    targets = fp_targets(params, cfg, calib_x)
    new, history, start = dict(params), [], time.time()

    def record(unit, before, after):
        history.append({"unit": unit, "loss_before": before, "loss_after": after})
        log(f"reconstruct {unit}: lp loss {before:.4g} -> {after:.4g} ({time.time() - start:.0f} s)")

    # patch embedding: input = the image patches, a single linear layer
    patches = vit.patchify(Tensor(calib_x), cfg.patch_size).data  # [B, P, C*p*p]

    def embed_fn(p, x):
        return ops.linear("patch_embed.proj", x, F.reshape(p["patch_embed.proj.weight"], (cfg.embed_dim, -1)),
                          p["patch_embed.proj.bias"])

    trained, before, after = _train_unit(["patch_embed.proj.weight", "patch_embed.proj.bias"], new, embed_fn,
                                         patches, targets["patch_embed"], rng, iters, lr, batch_size)
    new.update(trained)
    record("patch_embed", before, after)
    with no_grad():
        h = vit.embed(new, cfg, Tensor(calib_x), ops).data  # [B, N, D] quantized-model input of block 0
    for i in range(cfg.depth):
        keys = [f"blocks.{i}.{layer}.{kind}" for layer in BLOCK_LINEARS for kind in ("weight", "bias")]
        trained, before, after = _train_unit(keys, new, lambda p, x, i=i: vit.block(p, cfg, i, x, ops)[0],
                                             h, targets[f"block{i}"], rng, iters, lr, batch_size)
        new.update(trained)
        record(f"block{i}", before, after)
        with no_grad():
            h = vit.block(new, cfg, i, Tensor(h), ops)[0].data  # input of the next block
    with no_grad():
        normed = F.layer_norm(h, new["norm.weight"], new["norm.bias"], cfg.eps).data  # [B, N, D]
    heads = [("head", 0)] + ([("head_dist", 1)] if cfg.distilled else [])
    for name, token in heads:
        trained, before, after = _train_unit(
            [f"{name}.weight", f"{name}.bias"], new,
            lambda p, x, name=name: ops.linear(name, x, p[f"{name}.weight"], p[f"{name}.bias"]),
            np.ascontiguousarray(normed[:, token]), targets[name], rng, iters, lr, batch_size)
        new.update(trained)
        record(name, before, after)
    return new, history
