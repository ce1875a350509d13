"""Perplexity of a llama2.c model on a token stream: exp(mean next-token negative log-likelihood).

Text -> tokens (`stories_to_tokens`): like llama2.c's TinyStories pretokenization, every story is
stripped of surrounding whitespace and encoded with BOS and without EOS, and the stories are concatenated,
so BOS separates (and starts) stories. One non-empty line of the text file is one story.

Windows (`perplexity`): every stream position 1..N-1 is a target, predicted from the tokens before it.
The model sees at most `window` (<= seq_len) tokens at once; window k takes inputs ids[s : s+window]
with s = k * stride and predicts ids[s+1 : s+window+1], clipped at the end of the stream.
* stride == window (the default, window = seq_len): non-overlapping chunks, as in llama2.c's
  validation loss, where the model is trained and evaluated on 512-token chunks of the same kind of
  BOS-separated stream (chunks start anywhere, not necessarily at BOS);
* stride < window: sliding windows; each window scores only its targets not scored by an earlier
  window (the last `stride` ones), so every target gets at least window - stride tokens of context.
Each target is scored exactly once; the result is the mean NLL over all N-1 targets (nats per token) and
its exponential, the perplexity.

References: Jelinek et al., "Perplexity — a measure of the difficulty of speech recognition tasks",
JASA 1977; Eldan & Li, "TinyStories", arXiv:2305.07759, 2023; karpathy/llama2.c tinystories.py and
train.py (pretokenization, estimate_loss).
"""
from __future__ import annotations

import math
import sys

import numpy as np

from refq.autograd.engine import no_grad
from refq.models.llama import FLOAT_OPS, LlamaConfig, forward
from refq.models.ops import ModelOps
from refq.models.llama_tokenizer import LlamaTokenizer


def stories_to_tokens(tokenizer: LlamaTokenizer, text: str) -> np.ndarray:
    """int64 stream of all non-empty lines, each stripped and encoded as BOS + story."""
    ids = [tokenizer.encode(line.strip(), bos=True, eos=False) for line in text.splitlines() if line.strip()]
    if not ids:
        raise ValueError("stories_to_tokens: the text has no non-empty line")
    return np.concatenate([np.asarray(s, dtype=np.int64) for s in ids])


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, n_scored) per window: inputs ids[start:end], the last n_scored of its targets count."""
    out, scored_to, start = [], 0, 0  # targets ids[1..scored_to] are already scored
    while scored_to < n_tokens - 1:
        end = min(start + window, n_tokens - 1)
        out.append((start, end, end - scored_to))
        scored_to, start = end, start + stride
    return out


def window_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position negative log-likelihood (float64) of targets [B, T] under logits [B, T, V]."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))  # [B, T]
    return log_norm - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]  # [B, T]


def perplexity(params: dict, cfg: LlamaConfig, token_ids: np.ndarray, window: int | None = None,
               stride: int | None = None, ops: ModelOps = FLOAT_OPS, batch_size: int = 4,
               verbose: bool = False) -> dict:
    """Mean NLL (nats/token) and perplexity of the stream, with the windowing of the module docstring."""
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.size < 2:
        raise ValueError(f"perplexity: token_ids must be a 1-D integer array of >= 2 ids, got {ids.dtype} {ids.shape}")
    window = cfg.seq_len if window is None else int(window)
    stride = window if stride is None else int(stride)
    if not 1 <= window <= cfg.seq_len:
        raise ValueError(f"perplexity: window={window} must be in 1..seq_len={cfg.seq_len}")
    if not 1 <= stride <= window:
        raise ValueError(f"perplexity: stride={stride} must be in 1..window={window}")
    plan = windows(ids.size, window, stride)
    total, count = 0.0, 0
    with no_grad():
        for b in range(0, len(plan), batch_size):
            group = plan[b:b + batch_size]
            for length in sorted({end - start for start, end, _ in group}):  # only the last window is shorter
                rows = [(s, e, k) for s, e, k in group if e - s == length]
                x = np.stack([ids[s:e] for s, e, _ in rows])  # [B, T]
                y = np.stack([ids[s + 1:e + 1] for s, e, _ in rows])  # [B, T]
                nll = window_nll(forward(x, params, cfg, ops).data, y)  # [B, T]
                for row, (_, _, k) in zip(nll, rows):
                    total += float(row[length - k:].sum())
                    count += k
            if verbose:
                print(f"perplexity: {min(b + batch_size, len(plan))}/{len(plan)} windows, "
                      f"mean NLL so far {total / count:.4f}", file=sys.stderr)
    assert count == ids.size - 1
    mean = total / count
    return {"nll": mean, "ppl": math.exp(mean), "tokens": count, "windows": len(plan),
            "window": window, "stride": stride}
