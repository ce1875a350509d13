"""The refq ViT written directly in NumPy: a forward that keeps a cache and a hand-written backward.

The plain twin of refq.models.vit, the baseline of `refq bench autograd`: the same network (timm
layout, patch embedding as a matmul over flattened patches, class token (and DeiT distillation
token), learned position embedding, pre-norm blocks, LayerNorm with cfg.eps, GELU as in the autograd
(float32: refq.kernels.gelu), head on the class token, DeiT: mean of the two heads), the same
parameter dict, but no Tensor and no
graph: `forward` returns the logits and a cache of the activations the backward needs, and
`backward` applies the chain rule layer by layer, in reverse, by hand. Arrays keep the dtype of the
parameters and the input (float32 like the autograd path). Only full-precision ops (no ModelOps hooks).
Softmax and log-softmax are the plain-array helpers of refq.autograd.ops_nn (no Tensor involved).

Backward rules (g = dL/d output; the same equations as refq.autograd's ops_*):
  linear  y = x W^T + b:           dx = g W,   dW = g^T x,   db = sum_rows g
  matmul  C = A B:                 dA = G B^T, dB = A^T G
  softmax y = softmax(s):          ds = y (g - sum_j g_j y_j)
  LayerNorm y = xhat w + b:        dx = r (gw - mean(gw) - xhat mean(gw xhat)),  r = (var + eps)^-1/2,
                                   dw = sum_rows g xhat, db = sum_rows g
  GELU y = x Phi(x):               dx = g (Phi(x) + x phi(x))
  residual y = x + f(x):           dx = g + df
  cross-entropy (mean over B):     dz = (softmax(z) - onehot(y)) / B

References:
  Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (Eq. 1-4).
  Touvron et al., "Training data-efficient image transformers", ICML 2021 (Sec. 4, distillation token).
  Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors", Nature 1986;
  Goodfellow et al., "Deep Learning", MIT Press 2016, Sec. 6.5 (back-propagation).
  Ba et al., "Layer Normalization", 2016 (Eq. 4); Hendrycks & Gimpel, "GELUs", 2016 (Eq. 1).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from refq.kernels.gelu import gelu_f32, gelu_grad_f32
from refq.autograd.ops_nn import log_softmax_array, softmax_array
from refq.models.vit import ViTConfig

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ---- layers: each forward returns (output, what its backward needs) ----------------------------
def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x @ w.T + b with w [O, I]: [..., I] -> [..., O]."""
    y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(x.shape[:-1] + w.shape[:1])  # [M, I] @ [I, O] -> [..., O]
    y += b
    return y


def linear_backward(g: np.ndarray, x: np.ndarray, w: np.ndarray, want_x: bool = True, want_params: bool = True):
    """(dx or None, dW or None, db or None) of y = x @ w.T + b for upstream g [..., O]."""
    g2 = g.reshape(-1, g.shape[-1])  # [..., O] -> [M, O]
    dx = (g2 @ w).reshape(x.shape) if want_x else None  # [M, O] @ [O, I] -> [..., I]
    if not want_params:
        return dx, None, None
    dw = g2.T @ x.reshape(-1, x.shape[-1])  # [O, M] @ [M, I] -> [O, I]
    return dx, dw, g2.sum(axis=0)  # db: [O]


def layer_norm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float):
    """LayerNorm over the last axis; returns (y, (xhat, rstd))."""
    centered = x - x.mean(axis=-1, keepdims=True)  # [..., D]
    rstd = 1.0 / np.sqrt(np.square(centered).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    xhat = centered * rstd  # [..., D]
    return xhat * w + b, (xhat, rstd)


def layer_norm_backward(g: np.ndarray, w: np.ndarray, saved, want_params: bool = True):
    """(dx, dw or None, db or None) of LayerNorm for upstream g [..., D]."""
    xhat, rstd = saved
    gw = g * w  # [..., D]
    dx = rstd * (gw - gw.mean(axis=-1, keepdims=True) - xhat * (gw * xhat).mean(axis=-1, keepdims=True))
    if not want_params:
        return dx, None, None
    d = g.shape[-1]
    return dx, (g * xhat).reshape(-1, d).sum(axis=0), g.reshape(-1, d).sum(axis=0)  # dw, db: [D]


def gelu_forward(x: np.ndarray):
    """GELU x Phi(x) (float32: the same kernel as the autograd op); returns (y, (Phi(x), phi(x)))."""
    if x.dtype == np.float32:
        y, cdf, pdf = gelu_f32(x)
        return y, (cdf, pdf)
    cdf = 0.5 * (1.0 + erf(x * _INV_SQRT2))  # Phi(x), the standard normal CDF
    pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI  # phi(x), the standard normal density
    return x * cdf, (cdf, pdf)


def gelu_backward(g: np.ndarray, x: np.ndarray, saved) -> np.ndarray:
    """dx = g (Phi(x) + x phi(x)), saved = (Phi(x), phi(x))."""
    cdf, pdf = saved
    if x.dtype == g.dtype == np.float32:
        return gelu_grad_f32(g, x, cdf, pdf)
    return g * (cdf + x * pdf)


def softmax_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ds = y (g - sum(g y)) over the last axis, y = softmax(s)."""
    return y * (g - (g * y).sum(axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """(mean cross-entropy, d loss / d logits) of logits [B, K] against int labels [B]."""
    labels = np.asarray(labels)
    B, K = logits.shape
    if labels.shape != (B,) or labels.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: labels have shape {labels.shape} and dtype {labels.dtype}, "
                         f"expected integers of shape ({B},)")
    if B and (labels.min() < 0 or labels.max() >= K):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"cross_entropy: label {bad} is out of range for {K} classes")
    logp = log_softmax_array(logits)  # [B, K]
    rows = np.arange(B)
    loss = -float(logp[rows, labels].sum()) / B
    dlogits = np.exp(logp)  # [B, K] softmax
    dlogits[rows, labels] -= 1.0
    dlogits /= B
    return loss, dlogits


# ---- the network ------------------------------------------------------------------------------
def patchify(x: np.ndarray, p: int) -> np.ndarray:
    """Images [B, C, H, W] -> flattened non-overlapping p x p patches [B, N, C*p*p]."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).transpose(0, 2, 4, 1, 3, 5)  # -> [B, Gh, Gw, C, p, p]
    return x.reshape(B, (H // p) * (W // p), C * p * p)  # -> [B, N, C*p*p]


def unpatchify(patches: np.ndarray, cfg: ViTConfig) -> np.ndarray:
    """The inverse of patchify: [B, N, C*p*p] -> [B, C, H, W]."""
    B, p, g, C = patches.shape[0], cfg.patch_size, cfg.grid, cfg.in_chans
    x = patches.reshape(B, g, g, C, p, p).transpose(0, 3, 1, 4, 2, 5)  # -> [B, C, Gh, p, Gw, p]
    return x.reshape(B, C, cfg.img_size, cfg.img_size)


def lead_tokens(cfg: ViTConfig) -> list[str]:
    """Names of the tokens in front of the patches: the class token (and the distillation token)."""
    return ["cls_token", "dist_token"] if cfg.distilled else ["cls_token"]


def embed_forward(params: dict, cfg: ViTConfig, x: np.ndarray):
    """Patch embedding, class (and distillation) token, position embedding (ViT Eq. 1)."""
    B, D = x.shape[0], cfg.embed_dim
    patches = patchify(x, cfg.patch_size)  # [B, N, C*p*p]
    w = params["patch_embed.proj.weight"].reshape(D, -1)  # [D, C, p, p] -> [D, C*p*p]
    tokens = linear_forward(patches, w, params["patch_embed.proj.bias"])  # [B, N, C*p*p] -> [B, N, D]
    lead = [np.broadcast_to(params[name], (B, 1, D)) for name in lead_tokens(cfg)]  # [1, 1, D] -> [B, 1, D]
    h = np.concatenate(lead + [tokens], axis=1) + params["pos_embed"]  # -> [B, T, D], T = N + 1 (+1)
    return h, patches


def embed_backward(params: dict, cfg: ViTConfig, g: np.ndarray, patches: np.ndarray, want_params: bool,
                   want_input: bool):
    """(parameter grads, dx or None) of the embedding for upstream g [B, T, D]."""
    n_lead = len(lead_tokens(cfg))
    w = params["patch_embed.proj.weight"]
    dpatches, dw, db = linear_backward(g[:, n_lead:], patches, w.reshape(w.shape[0], -1), want_input,
                                       want_params)  # [B, N, D] -> [B, N, C*p*p]
    dx = unpatchify(dpatches, cfg) if want_input else None
    if not want_params:
        return {}, dx
    grads = {"patch_embed.proj.weight": dw.reshape(w.shape), "patch_embed.proj.bias": db,
             "pos_embed": g.sum(axis=0, keepdims=True)}  # [B, T, D] -> [1, T, D]
    for i, name in enumerate(lead_tokens(cfg)):
        grads[name] = g[:, i:i + 1].sum(axis=0, keepdims=True)  # [B, 1, D] -> [1, 1, D]
    return grads, dx


def attention_forward(params: dict, cfg: ViTConfig, i: int, x: np.ndarray):
    """Multi-head self-attention of block i on x [B, T, D]; returns (output, cache)."""
    B, T, D = x.shape
    H = cfg.num_heads
    pre = f"blocks.{i}.attn."
    qkv = linear_forward(x, params[pre + "qkv.weight"], params[pre + "qkv.bias"])  # [B, T, D] -> [B, T, 3D]
    q, k, v = qkv.reshape(B, T, 3, H, D // H).transpose(2, 0, 3, 1, 4)  # -> 3 x [B, H, T, Dh]
    scale = 1.0 / math.sqrt(D // H)
    attn = softmax_array((q @ k.transpose(0, 1, 3, 2)) * scale)  # [B, H, T, Dh] x [B, H, Dh, T] -> [B, H, T, T]
    heads = attn @ v  # [B, H, T, T] x [B, H, T, Dh] -> [B, H, T, Dh]
    merged = heads.transpose(0, 2, 1, 3).reshape(B, T, D)  # -> [B, T, D]
    out = linear_forward(merged, params[pre + "proj.weight"], params[pre + "proj.bias"])  # [B, T, D]
    return out, {"x": x, "q": q, "k": k, "v": v, "attn": attn, "merged": merged}


def attention_backward(params: dict, cfg: ViTConfig, i: int, g: np.ndarray, c: dict, want_params: bool):
    """(dx, parameter grads) of attention_forward for upstream g [B, T, D]."""
    B, T, D = g.shape
    H = cfg.num_heads
    pre = f"blocks.{i}.attn."
    dmerged, dw_proj, db_proj = linear_backward(g, c["merged"], params[pre + "proj.weight"], True, want_params)
    dheads = dmerged.reshape(B, T, H, D // H).transpose(0, 2, 1, 3)  # [B, T, D] -> [B, H, T, Dh]
    dattn = dheads @ c["v"].transpose(0, 1, 3, 2)  # [B, H, T, Dh] x [B, H, Dh, T] -> [B, H, T, T]
    dv = c["attn"].transpose(0, 1, 3, 2) @ dheads  # [B, H, T, T] x [B, H, T, Dh] -> [B, H, T, Dh]
    dscores = softmax_backward(dattn, c["attn"]) * (1.0 / math.sqrt(D // H))  # [B, H, T, T]
    dq = dscores @ c["k"]  # [B, H, T, T] x [B, H, T, Dh] -> [B, H, T, Dh]
    dk = dscores.transpose(0, 1, 3, 2) @ c["q"]  # [B, H, T, Dh]
    dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * D)  # [3, B, H, T, Dh] -> [B, T, 3D]
    dx, dw_qkv, db_qkv = linear_backward(dqkv, c["x"], params[pre + "qkv.weight"], True, want_params)
    grads = {pre + "qkv.weight": dw_qkv, pre + "qkv.bias": db_qkv,
             pre + "proj.weight": dw_proj, pre + "proj.bias": db_proj} if want_params else {}
    return dx, grads


def block_forward(params: dict, cfg: ViTConfig, i: int, x: np.ndarray):
    """Pre-norm transformer block i (ViT Eq. 2-3) on x [B, T, D]; returns (output, cache)."""
    pre = f"blocks.{i}."
    h1, norm1 = layer_norm_forward(x, params[pre + "norm1.weight"], params[pre + "norm1.bias"], cfg.eps)
    a, attn = attention_forward(params, cfg, i, h1)
    x1 = x + a  # [B, T, D]
    h2, norm2 = layer_norm_forward(x1, params[pre + "norm2.weight"], params[pre + "norm2.bias"], cfg.eps)
    f1 = linear_forward(h2, params[pre + "mlp.fc1.weight"], params[pre + "mlp.fc1.bias"])  # [B, T, D] -> [B, T, 4D]
    act, gelu_saved = gelu_forward(f1)  # [B, T, 4D]
    f2 = linear_forward(act, params[pre + "mlp.fc2.weight"], params[pre + "mlp.fc2.bias"])  # -> [B, T, D]
    cache = {"norm1": norm1, "attn": attn, "norm2": norm2, "h2": h2, "f1": f1, "gelu": gelu_saved, "act": act}
    return x1 + f2, cache


def block_backward(params: dict, cfg: ViTConfig, i: int, g: np.ndarray, c: dict, want_params: bool):
    """(dx, parameter grads) of block_forward for upstream g [B, T, D]."""
    pre = f"blocks.{i}."
    dact, dw2, db2 = linear_backward(g, c["act"], params[pre + "mlp.fc2.weight"], True, want_params)  # -> [B, T, 4D]
    df1 = gelu_backward(dact, c["f1"], c["gelu"])  # [B, T, 4D]
    dh2, dw1, db1 = linear_backward(df1, c["h2"], params[pre + "mlp.fc1.weight"], True, want_params)  # -> [B, T, D]
    dx1, dn2w, dn2b = layer_norm_backward(dh2, params[pre + "norm2.weight"], c["norm2"], want_params)
    dx1 = dx1 + g  # residual: x1 feeds both the MLP branch and the output
    dh1, grads = attention_backward(params, cfg, i, dx1, c["attn"], want_params)
    dx, dn1w, dn1b = layer_norm_backward(dh1, params[pre + "norm1.weight"], c["norm1"], want_params)
    if want_params:
        grads.update({pre + "mlp.fc2.weight": dw2, pre + "mlp.fc2.bias": db2,
                      pre + "mlp.fc1.weight": dw1, pre + "mlp.fc1.bias": db1,
                      pre + "norm2.weight": dn2w, pre + "norm2.bias": dn2b,
                      pre + "norm1.weight": dn1w, pre + "norm1.bias": dn1b})
    return dx + dx1, grads


def head_names(cfg: ViTConfig) -> list[str]:
    """The classifier heads, in token order: the class-token head (and the distillation head)."""
    return ["head", "head_dist"] if cfg.distilled else ["head"]


def head_forward(params: dict, cfg: ViTConfig, x: np.ndarray):
    """Final LayerNorm and the classifier on the class token (DeiT: mean of both heads) (ViT Eq. 4)."""
    h, norm = layer_norm_forward(x, params["norm.weight"], params["norm.bias"], cfg.eps)  # [B, T, D]
    names = head_names(cfg)
    logits = sum(linear_forward(h[:, t], params[n + ".weight"], params[n + ".bias"])  # [B, D] -> [B, K]
                 for t, n in enumerate(names))
    if len(names) > 1:
        logits = logits * (1.0 / len(names))
    return logits, {"h": h, "norm": norm}


def head_backward(params: dict, cfg: ViTConfig, g: np.ndarray, c: dict, want_params: bool):
    """(dx, parameter grads) of head_forward for upstream g [B, K]."""
    names = head_names(cfg)
    g = g * (1.0 / len(names)) if len(names) > 1 else g
    dh = np.zeros_like(c["h"])  # [B, T, D]: only the class (and distillation) rows receive gradient
    grads = {}
    for t, n in enumerate(names):
        dh[:, t], grads[n + ".weight"], grads[n + ".bias"] = linear_backward(
            g, c["h"][:, t], params[n + ".weight"], True, want_params)  # [B, K] -> [B, D]
    dx, grads["norm.weight"], grads["norm.bias"] = layer_norm_backward(dh, params["norm.weight"], c["norm"],
                                                                       want_params)
    return dx, grads if want_params else {}


def forward(params: dict, cfg: ViTConfig, x: np.ndarray):
    """(logits [B, K], cache) for normalised images x [B, C, H, W]; the cache feeds `backward`."""
    if x.ndim != 4 or tuple(x.shape[1:]) != (cfg.in_chans, cfg.img_size, cfg.img_size):
        raise ValueError(f"vit_numpy.forward: input shape {tuple(x.shape)}, config needs "
                         f"[B, {cfg.in_chans}, {cfg.img_size}, {cfg.img_size}]")
    h, patches = embed_forward(params, cfg, x)  # [B, T, D]
    blocks = []
    for i in range(cfg.depth):
        h, c = block_forward(params, cfg, i, h)
        blocks.append(c)
    logits, head = head_forward(params, cfg, h)
    return logits, {"patches": patches, "blocks": blocks, "head": head}


def backward(params: dict, cfg: ViTConfig, cache: dict, dlogits: np.ndarray, param_grads: bool = True,
             input_grad: bool = True):
    """(grads, dx): d loss / d every parameter (a dict keyed like params; {} without param_grads) and
    d loss / d images [B, C, H, W] (None without input_grad), from the upstream dlogits [B, K]."""
    if not (param_grads or input_grad):
        raise ValueError("vit_numpy.backward: param_grads=False and input_grad=False ask for no gradient")
    g, grads = head_backward(params, cfg, dlogits, cache["head"], param_grads)
    for i in reversed(range(cfg.depth)):
        g, block_grads = block_backward(params, cfg, i, g, cache["blocks"][i], param_grads)
        grads.update(block_grads)
    embed_grads, dx = embed_backward(params, cfg, g, cache["patches"], param_grads, input_grad)
    grads.update(embed_grads)
    return grads, dx


def loss_and_grads(params: dict, cfg: ViTConfig, x: np.ndarray, labels: np.ndarray, param_grads: bool = True,
                   input_grad: bool = True):
    """(mean cross-entropy, parameter grads, image grad) of the classifier on images x and int labels."""
    logits, cache = forward(params, cfg, x)
    loss, dlogits = cross_entropy(logits, labels)
    grads, dx = backward(params, cfg, cache, dlogits, param_grads, input_grad)
    return loss, grads, dx
