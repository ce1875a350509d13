"""One shared calibration pass: run the FP model on calibration tokens and collect, for the input x of every
quantized linear layer, the statistics all methods need (so every method sees the same calibration set):

    gram     H = sum_t x_t x_t^T       float64 [I, I]   (ASER/SVD-LLM whitening, GPTQ's Hessian / 2)
    absmax   a_j = max_t |x_tj|        float64 [I]      (SmoothQuant / ASER smoothing, outlier scores)
    abs_sum  sum_t |x_tj|              float64 [I]      (L2QER's scale mean|x|)
    count    number of tokens N                         (padding rows are dropped by a row mask)
    inputs   the first `keep_inputs` rows of x (float32), for layer-wise error plots and tests

The activations come from the FP model in one pass (docs/aser.md, A7; SVD-LLM and the
LQER profiler do the same), through the model's named linear hook.

Calibration data for stories260K (docs/aser.md, A7), two variants:
* text: the stories of tinystories_excerpt.txt (one per line) after removing case-insensitive duplicates
  (the file repeats some stories); the first CALIB_STORIES distinct stories calibrate, the remaining ones
  are the evaluation split, so calibration and evaluation never share a story (`split_stories`);
* generated (data-free): stories sampled from the FP model itself at temperature 1 with a seeded
  np.random.Generator (`generate_tokens`), BOS-separated like the text stream.

References: ASER, AAAI 2025 (Error Reconstruction: the Gram of the layer inputs); docs/aser.md, A3 and A7;
Zhang et al., "LQER", ICML 2024, Sec. 3.2 (L2QER's mean|x|); Wang et al., "SVD-LLM", ICLR 2025 (one
profiling pass); Frantar et al., "GPTQ", ICLR 2023 (H = 2 X X^T from calibration inputs).
"""
from __future__ import annotations

import sys

import numpy as np

from refq.aser.types import BERT_LINEARS, LLAMA_LINEARS, LayerStats

CALIB_STORIES = 4

class StatsRecorder:
    """LayerStats per layer name, filled by a model hook through `record(name, x)`.

    Linears that read the very same input array (q/k/v, w1/w3) share one LayerStats object instead of
    accumulating three identical Grams; rows are buffered and added FLUSH_ROWS at a time (one large
    X^T X instead of many small ones); `row_mask` (set by the caller per batch) drops padding rows.
    """

    FLUSH_ROWS = 4096

    def __init__(self, names=None, keep_inputs: int = 0):
        self.names = None if names is None else set(names)
        self.keep_inputs = keep_inputs
        self.row_mask: np.ndarray | None = None  # [B*T] bool for the current batch, or None (all rows real)
        self._stats: dict[str, LayerStats] = {}
        self._alias: dict[str, str] = {}  # name -> the name whose input it shares
        self._pending: dict[str, list[np.ndarray]] = {}
        self._last: tuple = (None, None)  # (input array, name) of the previous call

    def wants(self, name: str) -> bool:
        """Whether layer `name` is one to record."""
        return self.names is None or name in self.names

    def record(self, name: str, x: np.ndarray) -> None:
        """Add the (unmasked) rows of x [..., I] to layer `name`'s statistics."""
        last_x, last_name = self._last
        self._last = (x, name)
        source = self._alias.get(last_name, last_name)
        if x is last_x and self._alias.get(name, source) == source:
            self._alias[name] = source  # same input as the previous linear: share its statistics
            return
        assert name not in self._alias, f"{name} shared its input before but not now"
        x2 = x.reshape(-1, x.shape[-1])  # [..., I] -> [N, I]
        if self.row_mask is not None:
            assert self.row_mask.shape == (x2.shape[0],), "row_mask does not match the batch"
            x2 = x2[self.row_mask]  # [N_real, I]
        if name not in self._stats:
            self._stats[name] = LayerStats(x2.shape[1], self.keep_inputs)
            self._pending[name] = []
        self._pending[name].append(x2.astype(np.float32))
        if sum(len(p) for p in self._pending[name]) >= self.FLUSH_ROWS:
            self._flush(name)

    def _flush(self, name: str) -> None:
        if self._pending[name]:
            self._stats[name].update(np.concatenate(self._pending[name]))  # [N, I]
            self._pending[name] = []

    @property
    def stats(self) -> dict[str, LayerStats]:
        """Name -> LayerStats of everything recorded so far (aliases resolved)."""
        for name in self._pending:
            self._flush(name)
        out = dict(self._stats)
        out.update({name: self._stats[src] for name, src in self._alias.items()})
        return out


def llama_linear_names(cfg) -> list[str]:
    """Hook names of every linear inside the transformer blocks ("layers.3.w2"); the classifier stays FP."""
    return [f"layers.{l}.{w}" for l in range(cfg.n_layers) for w in LLAMA_LINEARS]


def recording_ops(recorder: StatsRecorder):
    """A linear hook (refq.models.ops.ModelOps protocol) that records its inputs, then runs in float."""
    from refq.autograd import functional as F
    from refq.autograd.engine import as_array
    from refq.models.ops import ModelOps

    class RecordingOps(ModelOps):
        def linear(self, name, x, w, b=None):
            """Record x [..., I] under `name`, then return x @ w.T + b."""
            if recorder.wants(name):
                recorder.record(name, as_array(x))
            return F.linear(x, w, b)  # [..., I] -> [..., O]

    return RecordingOps()


def calibrate_llama(params: dict, cfg, token_ids: np.ndarray, window: int | None = None, keep_inputs: int = 0,
                    names=None, verbose: bool = False) -> dict[str, LayerStats]:
    """LayerStats of every block linear over the stream cut into non-overlapping windows (default seq_len)."""
    from refq.autograd.engine import no_grad
    from refq.models.llama import forward

    ids = np.asarray(token_ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.size < 1:
        raise ValueError(f"calibrate_llama: token_ids must be a non-empty 1-D int array, got {ids.dtype} {ids.shape}")
    window = cfg.seq_len if window is None else int(window)
    if not 1 <= window <= cfg.seq_len:
        raise ValueError(f"calibrate_llama: window={window} must be in 1..seq_len={cfg.seq_len}")
    recorder = StatsRecorder(llama_linear_names(cfg) if names is None else names, keep_inputs)
    ops = recording_ops(recorder)
    with no_grad():
        for start in range(0, ids.size, window):
            forward(ids[None, start:start + window], params, cfg, ops)  # [1, T] -> logits, unused
            if verbose:
                print(f"calibrate: {min(start + window, ids.size)}/{ids.size} tokens", file=sys.stderr)
    return recorder.stats


def calibrate_bert(model, texts: list[str], keep_inputs: int = 0, batch_size: int = 32, names=None,
                   verbose: bool = False) -> dict[str, LayerStats]:
    """LayerStats of every encoder linear of a SentenceModel over the real (unpadded) tokens of the texts."""
    from refq.autograd.engine import no_grad
    from refq.models.bert import encode
    from refq.models.wordpiece import encode_batch

    if isinstance(texts, str) or not texts:
        raise ValueError(f"calibrate_bert: expected a non-empty list of strings, got {texts!r:.80}")
    if names is None:
        names = [f"encoder.layer.{i}.{n}" for i in range(model.config.num_hidden_layers) for n in BERT_LINEARS]
    recorder = StatsRecorder(names, keep_inputs)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: little padding
    ops = recording_ops(recorder)
    with no_grad():
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start:start + batch_size]]
            ids, mask = encode_batch(batch, model.vocab, model.max_length)  # [B, T] each
            recorder.row_mask = mask.reshape(-1) == 1  # [B*T]: padding rows never enter the statistics
            encode(model.params, ids, mask, model.config, ops=ops)
            if verbose:
                print(f"calibrate: {min(start + batch_size, len(texts))}/{len(texts)} sentences", file=sys.stderr)
    return recorder.stats


def sentences_of(text: str, min_words: int = 4) -> list[str]:
    """Split running text into sentences at . ! ? (for calibrating an encoder on story text)."""
    import re

    parts = re.split(r"(?<=[.!?])[\"']?\s+", " ".join(text.split()))
    return [p.strip() for p in parts if len(p.split()) >= min_words]


def split_stories(text: str, n_calib: int = CALIB_STORIES) -> tuple[list[str], list[str]]:
    """(calibration, evaluation) stories: distinct lines (case-insensitive), the first n_calib calibrate."""
    seen, stories = set(), []
    for line in text.splitlines():
        key = " ".join(line.split()).lower()
        if key and key not in seen:
            seen.add(key)
            stories.append(line.strip())
    if not 1 <= n_calib < len(stories):
        raise ValueError(f"split_stories: n_calib={n_calib} must leave stories on both sides "
                         f"(the text has {len(stories)} distinct stories)")
    return stories[:n_calib], stories[n_calib:]


def generate_tokens(params: dict, cfg, n_tokens: int, rng: np.random.Generator, temperature: float = 1.0,
                    max_story: int = 256) -> np.ndarray:
    """Data-free calibration: >= n_tokens of BOS-started stories sampled from the FP model (int64 stream)."""
    from refq.models.llama import KVCache, forward_numpy
    from refq.models.llama_tokenizer import BOS

    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"generate_tokens: rng is a {type(rng).__name__}, expected np.random.Generator")
    if n_tokens < 1 or not 2 <= max_story <= cfg.seq_len or temperature <= 0:
        raise ValueError(f"generate_tokens: n_tokens={n_tokens}, max_story={max_story} (2..{cfg.seq_len}) "
                         f"and temperature={temperature} must be positive")
    stream: list[int] = []
    while len(stream) < n_tokens:
        cache = KVCache(cfg, 1, params["token_embedding_table"].dtype, capacity=max_story)
        story, token = [BOS], BOS
        while len(story) < max_story:
            logits = forward_numpy(np.asarray([[token]]), params, cfg, cache)[0, -1].astype(np.float64)  # [V]
            p = np.exp((logits - logits.max()) / temperature)  # [V] unnormalised
            cdf = np.cumsum(p)
            token = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), cdf.size - 1))
            if token == BOS:  # the model ends its story
                break
            story.append(token)
        stream.extend(story)
    return np.asarray(stream, dtype=np.int64)
