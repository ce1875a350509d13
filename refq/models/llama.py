"""Llama 2 as in llama2.c: pre-norm decoder with RMSNorm, RoPE, grouped-query attention and SwiGLU.

Functions over the params dict of `refq.io.llama2c.read_checkpoint` (one array per checkpoint field,
stacked over layers: `params["wq"][l]` is [D, D], rows = outputs). Three implementations of one model:
* `forward`: batched, on refq Tensors (`refq.autograd.functional`), so gradients reach inputs and weights;
  every linear layer goes through `ops.linear(name, x, w)` ("layers.3.w2", "wcls", ...) so that a quantized
  model (ASER) can replace them without touching this file;
* `forward_numpy`: the same batched math in plain NumPy with an optional `KVCache` (fast generation);
* `forward_naive`: one position at a time, one head at a time, float64 loops (the shape of run.c's
  forward), the reference the other two are tested against.

Per layer l, for x [T, D] (Touvron et al. 2023, Sec. 2.2):
  h = x + Wo · Attn(RoPE(Wq · n1(x)), RoPE(Wk · n1(x)), Wv · n1(x))      n1 = RMSNorm(rms_att_weight[l])
  x' = h + W2 · (silu(W1 · n2(h)) * (W3 · n2(h)))                       n2 = RMSNorm(rms_ffn_weight[l])
RMSNorm(x) = w * x / sqrt(mean(x^2) + 1e-5)  (Zhang & Sennrich 2019, Eq. 4).
RoPE (Su et al. 2021, Eq. 34) in llama2.c's interleaved convention: within each head, the channel pair
(2i, 2i+1) at position p is rotated by the angle p * 10000^(-2i/Dh).
Attention: softmax(q k^T / sqrt(Dh)) v over keys at positions <= the query's (causal); query head h uses
key/value head h // (n_heads / n_kv_heads) (grouped-query attention, Ainslie et al. 2023, Sec. 2.2).
Logits = wcls · RMSNorm(rms_final_weight)(x), with wcls = token_embedding_table when shared.

References:
  Touvron et al., "Llama 2: Open Foundation and Fine-Tuned Chat Models", arXiv:2307.09288, 2023.
  Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
  Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", arXiv:2104.09864, 2021.
  Shazeer, "GLU Variants Improve Transformer", arXiv:2002.05202, 2020 (SwiGLU, Eq. 6).
  Ainslie et al., "GQA: Training Generalized Multi-Query Transformer Models", EMNLP 2023.
  karpathy/llama2.c, run.c (forward, generate), 2023.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from refq.autograd import functional as F
from refq.io.llama2c import weight_shapes
from refq.models.checks import check_param_shapes
from refq.models.ops import FLOAT_OPS, ModelOps
from refq.models.llama_tokenizer import BOS

NORM_EPS = 1e-5
ROPE_THETA = 10000.0


@dataclass(frozen=True)
class LlamaConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool = True

    def __post_init__(self):
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LlamaConfig: {name}={getattr(self, name)} must be positive")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads or self.head_size % 2:
            raise ValueError(f"LlamaConfig: dim={self.dim}, n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads} "
                             "need n_heads | dim, n_kv_heads | n_heads and an even head size")

    head_size = property(lambda self: self.dim // self.n_heads)
    kv_dim = property(lambda self: self.n_kv_heads * self.head_size)
    kv_mul = property(lambda self: self.n_heads // self.n_kv_heads)  # query heads per key/value head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LlamaConfig":
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"LlamaConfig.from_dict: unknown keys {unknown}")
        return cls(**d)


def check_params(params: dict, cfg: LlamaConfig) -> None:
    """ValueError naming the first missing, unexpected or mis-shaped key."""
    check_param_shapes(params, weight_shapes(cfg.to_dict()), "llama")


def init_params(cfg: LlamaConfig, rng: np.random.Generator, dtype=np.float32) -> dict[str, np.ndarray]:
    """Random weights (normal, std 1/sqrt(fan-in); norm gains near 1) for tests and walkthroughs."""
    params = {}
    for name, shape in weight_shapes(cfg.to_dict()).items():
        if name.startswith("rms_"):
            params[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(dtype)
        else:
            params[name] = (rng.standard_normal(shape) / math.sqrt(shape[-1])).astype(dtype)
    return params


def classifier(params: dict):
    """The output projection: wcls, or the token embedding when the classifier is shared."""
    return params["wcls"] if "wcls" in params else params["token_embedding_table"]


def rope_tables(positions: np.ndarray, head_size: int, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(cos, signed sin), each [T, Dh], with RoPE(x) = x * cos + swap_pairs(x) * sin (computed in dtype)."""
    i = np.arange(0, head_size, 2).astype(dtype)  # [Dh/2] even channel indices 2i
    freq = dtype(1.0) / dtype(ROPE_THETA) ** (i / dtype(head_size))  # [Dh/2]
    angle = positions.astype(dtype)[:, None] * freq[None, :]  # [T, Dh/2]
    cos = np.repeat(np.cos(angle), 2, axis=-1)  # [T, Dh]: c0 c0 c1 c1 ...
    sin = np.stack([-np.sin(angle), np.sin(angle)], axis=-1).reshape(len(positions), head_size)  # -s0 s0 -s1 s1 ...
    return cos, sin


def causal_mask(t_query: int, t_key: int, start: int, dtype) -> np.ndarray:
    """[Tq, Tk] additive mask: 0 where key position <= query position (start + row), -inf elsewhere."""
    allowed = np.arange(t_key)[None, :] <= start + np.arange(t_query)[:, None]  # [Tq, Tk]
    return np.where(allowed, 0.0, -np.inf).astype(dtype)


# ---- Tensor path (differentiable) ----------------------------------------------------------------

def rope(x, cos: np.ndarray, sin: np.ndarray):
    """Rotate each head's channel pairs (2i, 2i+1) of x [B, T, nh, Dh] by the position's angles."""
    B, T, nh, Dh = x.shape
    swapped = F.reshape(F.flip(F.reshape(x, (B, T, nh, Dh // 2, 2)), axis=-1), (B, T, nh, Dh))  # (x1, x0) pairs
    return F.add(F.mul(x, cos[:, None, :]), F.mul(swapped, sin[:, None, :]))  # [B, T, nh, Dh]


def attention(params: dict, cfg: LlamaConfig, l: int, h, cos, sin, ops: ModelOps = FLOAT_OPS):
    """Causal grouped-query self-attention of layer l on normalised h [B, T, D]."""
    B, T, D = h.shape
    G, M, Dh = cfg.n_kv_heads, cfg.kv_mul, cfg.head_size
    q = rope(F.reshape(ops.linear(f"layers.{l}.wq", h, params["wq"][l]), (B, T, cfg.n_heads, Dh)), cos, sin)
    k = rope(F.reshape(ops.linear(f"layers.{l}.wk", h, params["wk"][l]), (B, T, G, Dh)), cos, sin)
    v = F.reshape(ops.linear(f"layers.{l}.wv", h, params["wv"][l]), (B, T, G, Dh))  # [B, T, G, Dh]
    q = F.transpose(F.reshape(q, (B, T, G, M, Dh)), (0, 2, 3, 1, 4))  # -> [B, G, M, T, Dh]
    kt = F.reshape(F.transpose(k, (0, 2, 3, 1)), (B, G, 1, Dh, T))  # -> [B, G, 1, Dh, T]
    v = F.reshape(F.transpose(v, (0, 2, 1, 3)), (B, G, 1, T, Dh))  # -> [B, G, 1, T, Dh]
    scores = F.div(F.matmul(q, kt), np.float64(math.sqrt(Dh)))  # [B, G, M, T, T]; float64: exact constant
    a = F.softmax(F.add(scores, causal_mask(T, T, 0, scores.dtype)), axis=-1)  # rows sum to 1
    out = F.matmul(a, v)  # [B, G, M, T, Dh]
    out = F.reshape(F.transpose(out, (0, 3, 1, 2, 4)), (B, T, D))  # -> [B, T, D], head h = g * M + m
    return ops.linear(f"layers.{l}.wo", out, params["wo"][l])


def feed_forward(params: dict, l: int, h, ops: ModelOps = FLOAT_OPS):
    """SwiGLU feed-forward of layer l: W2 (silu(W1 h) * W3 h)."""
    gate = F.silu(ops.linear(f"layers.{l}.w1", h, params["w1"][l]))  # [B, T, D] -> [B, T, H]
    up = ops.linear(f"layers.{l}.w3", h, params["w3"][l])  # [B, T, H]
    return ops.linear(f"layers.{l}.w2", F.mul(gate, up), params["w2"][l])  # [B, T, H] -> [B, T, D]


def forward_embeddings(x, params: dict, cfg: LlamaConfig, ops: ModelOps = FLOAT_OPS):
    """Logits [B, T, V] from token embeddings x [B, T, D] (Tensor or ndarray) at positions 0..T-1."""
    cos, sin = rope_tables(np.arange(x.shape[1]), cfg.head_size, x.dtype.type)
    for l in range(cfg.n_layers):
        x = F.add(x, attention(params, cfg, l, F.rms_norm(x, params["rms_att_weight"][l], NORM_EPS), cos, sin, ops))
        x = F.add(x, feed_forward(params, l, F.rms_norm(x, params["rms_ffn_weight"][l], NORM_EPS), ops))
    x = F.rms_norm(x, params["rms_final_weight"], NORM_EPS)  # [B, T, D]
    return ops.linear("wcls", x, classifier(params))  # [B, T, D] -> [B, T, V]


def _check_tokens(tokens: np.ndarray, cfg: LlamaConfig, start: int = 0) -> np.ndarray:
    """tokens as an int64 [B, T] array; ValueError on a bad shape, id or length."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.dtype.kind not in "iu":
        raise ValueError(f"llama: tokens must be an integer [B, T] array, got {tokens.dtype} {tokens.shape}")
    if tokens.size and not (0 <= tokens.min() and tokens.max() < cfg.vocab_size):
        raise ValueError(f"llama: token ids span {tokens.min()}..{tokens.max()}, vocab_size is {cfg.vocab_size}")
    if start + tokens.shape[1] > cfg.seq_len:
        raise ValueError(f"llama: positions {start}..{start + tokens.shape[1] - 1} exceed seq_len {cfg.seq_len}")
    return tokens.astype(np.int64)


def forward(tokens: np.ndarray, params: dict, cfg: LlamaConfig, ops: ModelOps = FLOAT_OPS):
    """Logits Tensor [B, T, V] for token ids [B, T] (differentiable w.r.t. Tensor params)."""
    tokens = _check_tokens(tokens, cfg)
    return forward_embeddings(F.embedding(params["token_embedding_table"], tokens), params, cfg, ops)  # [B, T, D]


# ---- NumPy path with a key/value cache (fast generation) ------------------------------------------

class KVCache:
    """Rotated keys and values of the positions processed so far, [L, B, S, G, Dh] each.

    S starts at `capacity` (default seq_len) and doubles, up to seq_len, when more positions arrive, so that
    memory follows the tokens actually processed, not a checkpoint's seq_len.
    """

    def __init__(self, cfg: LlamaConfig, batch: int = 1, dtype=np.float32, capacity: int | None = None):
        capacity = cfg.seq_len if capacity is None else min(int(capacity), cfg.seq_len)
        if capacity < 1:
            raise ValueError(f"KVCache: capacity {capacity} must be at least 1")
        self.seq_len = cfg.seq_len
        shape = (cfg.n_layers, batch, capacity, cfg.n_kv_heads, cfg.head_size)
        self.k = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.length = 0

    def reserve(self, positions: int) -> None:
        """Make room for `positions` (<= seq_len) positions, doubling the capacity as needed."""
        assert positions <= self.seq_len, (positions, self.seq_len)
        capacity = self.k.shape[2]
        if positions <= capacity:
            return
        while capacity < positions:
            capacity *= 2
        capacity = min(capacity, self.seq_len)
        grown = []
        for old in (self.k, self.v):
            new = np.zeros((*old.shape[:2], capacity, *old.shape[3:]), old.dtype)
            new[:, :, :self.length] = old[:, :, :self.length]
            grown.append(new)
        self.k, self.v = grown


def rms_norm_np(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """RMSNorm over the last axis."""
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + x.dtype.type(NORM_EPS)))


def rope_np(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """NumPy twin of `rope` for x [B, T, nh, Dh]."""
    swapped = x.reshape(*x.shape[:-1], -1, 2)[..., ::-1].reshape(x.shape)  # (x1, x0) pairs
    return x * cos[:, None, :] + swapped * sin[:, None, :]


def forward_numpy(tokens: np.ndarray, params: dict, cfg: LlamaConfig, cache: KVCache | None = None) -> np.ndarray:
    """Logits [B, T, V] for tokens [B, T] at positions cache.length.. (0 without a cache); fills the cache."""
    start = 0 if cache is None else cache.length
    tokens = _check_tokens(tokens, cfg, start)
    B, T = tokens.shape
    G, M, Dh = cfg.n_kv_heads, cfg.kv_mul, cfg.head_size
    x = params["token_embedding_table"][tokens]  # [B, T, D]
    dt = x.dtype.type
    cos, sin = rope_tables(np.arange(start, start + T), Dh, dt)
    mask = causal_mask(T, start + T, start, x.dtype)  # [T, S]
    if cache is not None:
        cache.reserve(start + T)
    for l in range(cfg.n_layers):
        h = rms_norm_np(x, params["rms_att_weight"][l])
        q = rope_np((h @ params["wq"][l].T).reshape(B, T, cfg.n_heads, Dh), cos, sin)  # [B, T, nh, Dh]
        k = rope_np((h @ params["wk"][l].T).reshape(B, T, G, Dh), cos, sin)  # [B, T, G, Dh]
        v = (h @ params["wv"][l].T).reshape(B, T, G, Dh)
        if cache is not None:
            cache.k[l, :, start:start + T], cache.v[l, :, start:start + T] = k, v
            k, v = cache.k[l, :, :start + T], cache.v[l, :, :start + T]  # [B, S, G, Dh]
        q = q.reshape(B, T, G, M, Dh).transpose(0, 2, 3, 1, 4)  # [B, G, M, T, Dh]
        scores = q @ k.transpose(0, 2, 3, 1)[:, :, None] / dt(math.sqrt(Dh)) + mask  # [B, G, M, T, S]
        a = np.exp(scores - scores.max(axis=-1, keepdims=True))
        a = a / a.sum(axis=-1, keepdims=True)
        out = (a @ v.transpose(0, 2, 1, 3)[:, :, None]).transpose(0, 3, 1, 2, 4).reshape(B, T, cfg.dim)  # [B, T, D]
        x = x + out @ params["wo"][l].T
        h = rms_norm_np(x, params["rms_ffn_weight"][l])
        gate = h @ params["w1"][l].T  # [B, T, H]
        x = x + (gate / (dt(1.0) + np.exp(-gate)) * (h @ params["w3"][l].T)) @ params["w2"][l].T
    if cache is not None:
        cache.length = start + T
    return rms_norm_np(x, params["rms_final_weight"]) @ classifier(params).T  # [B, T, V]


def generate_tokens(params: dict, cfg: LlamaConfig, prompt: list[int], steps: int, sampler):
    """Yield run.c's token stream: the prompt after its first token, then samples, until `steps` or BOS."""
    if not prompt:
        raise ValueError("generate: the prompt needs at least one token (BOS)")
    if not 0 < steps <= cfg.seq_len:
        raise ValueError(f"generate: steps={steps} must be in 1..seq_len={cfg.seq_len}")
    cache = KVCache(cfg, 1, params["token_embedding_table"].dtype, capacity=min(steps, len(prompt) + 256))
    forced = min(len(prompt) - 1, steps)  # positions whose next token is dictated by the prompt
    if forced:
        forward_numpy(np.asarray([prompt[:forced]]), params, cfg, cache)  # prefill; logits unused
    for nxt in prompt[1:forced + 1]:
        if nxt == BOS:
            return
        yield nxt
    token = prompt[forced]
    for _ in range(forced, steps):
        nxt = sampler(forward_numpy(np.asarray([[token]]), params, cfg, cache)[0, -1])
        if nxt == BOS:  # BOS delimits stories: run.c stops here
            return
        yield nxt
        token = nxt


# ---- naive reference: one position, one head at a time, float64 ----------------------------------

def forward_naive(tokens: list[int], params: dict, cfg: LlamaConfig) -> np.ndarray:
    """float64 logits [T, V] computed position by position with explicit loops (the test reference)."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    D, Dh, M = cfg.dim, cfg.head_size, cfg.kv_mul

    def rms(x, w):
        return w * x / math.sqrt(float(x @ x) / x.size + NORM_EPS)

    keys, values, logits = [[] for _ in range(cfg.n_layers)], [[] for _ in range(cfg.n_layers)], []
    for pos, token in enumerate(tokens):
        x = p["token_embedding_table"][token].copy()  # [D]
        for l in range(cfg.n_layers):
            xb = rms(x, p["rms_att_weight"][l])
            q, k, v = p["wq"][l] @ xb, p["wk"][l] @ xb, p["wv"][l] @ xb  # [D], [KV], [KV]
            for i in range(0, D, 2):  # RoPE on the pair (i, i+1); i % Dh is the even index 2j within the head
                angle = pos * ROPE_THETA ** (-(i % Dh) / Dh)
                c, s = math.cos(angle), math.sin(angle)
                for vec in (q, k) if i < cfg.kv_dim else (q,):
                    vec[i], vec[i + 1] = vec[i] * c - vec[i + 1] * s, vec[i] * s + vec[i + 1] * c
            keys[l].append(k)
            values[l].append(v)
            att = np.zeros(D)
            for h in range(cfg.n_heads):
                g = slice((h // M) * Dh, (h // M + 1) * Dh)  # this query head's key/value head
                qh = q[h * Dh:(h + 1) * Dh]
                scores = np.array([qh @ keys[l][t][g] for t in range(pos + 1)]) / math.sqrt(Dh)
                w = np.exp(scores - scores.max())
                w /= w.sum()
                for t in range(pos + 1):
                    att[h * Dh:(h + 1) * Dh] += w[t] * values[l][t][g]
            x = x + p["wo"][l] @ att
            xb = rms(x, p["rms_ffn_weight"][l])
            gate = p["w1"][l] @ xb
            x = x + p["w2"][l] @ (gate / (1.0 + np.exp(-gate)) * (p["w3"][l] @ xb))
        logits.append(classifier(p) @ rms(x, p["rms_final_weight"]))
    return np.array(logits)
