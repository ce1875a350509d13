"""Next-token sampling exactly as llama2.c's run.c does it, so that seeded samples match byte for byte.

* `XorShiftRNG`: xorshift64* (shifts 12, 25, 27; multiplier 0x2545F4914F6CDD1D; the upper 32 bits of the
  product are the output). `random_f32` keeps the top 24 of those bits: (u32 >> 8) / 2^24, in [0, 1).
  This is the one RNG in refq that is not a `np.random.Generator`: parity with run.c needs its stream.
* Temperature 0 means greedy: the argmax of the logits (first index on ties). Otherwise the logits are
  divided by the temperature, softmaxed (max subtracted, float32 sums accumulated left to right), and ONE
  coin = random_f32() is drawn per sampled token, before choosing between:
* `sample_mult`: the first i whose running float32 cdf exceeds the coin (n-1 if rounding leaves none);
* `sample_topp` (nucleus, for 0 < topp < 1): drop tokens with p < (1 - topp)/(n - 1), which cannot be in
  the nucleus when topp >= 1/n (below that the filter can drop every token and run.c then reads out of
  bounds; refq returns the most probable token, which is the whole nucleus in that case); sort the rest by
  descending p (stable: equal p keep index order, like glibc's merge-sort qsort), keep the shortest prefix
  whose float32 cumulative sum exceeds topp (all of them if none does),
  then return the first kept token whose running cdf exceeds coin * (the prefix's cumulative sum).
All arithmetic is float32 like the C code; running sums use np.cumsum, which adds sequentially.

References: Marsaglia, "Xorshift RNGs", J. Stat. Softw. 2003 and Vigna, "An experimental exploration of
Marsaglia's xorshift generators, scrambled", 2016 (xorshift64*); Holtzman et al., "The Curious Case of
Neural Text Degeneration", ICLR 2020 (top-p); karpathy/llama2.c run.c (Sampler).
"""
from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_MULTIPLIER = 0x2545F4914F6CDD1D


class XorShiftRNG:
    """run.c's xorshift64* generator; the state is a 64-bit unsigned integer."""

    def __init__(self, seed: int):
        if not 0 < seed <= _MASK64:
            raise ValueError(f"XorShiftRNG: seed {seed} must be in 1..2^64-1 (state 0 stays 0 forever)")
        self.state = int(seed)

    def random_u32(self) -> int:
        """Advance the state; return the upper 32 bits of state * multiplier (mod 2^64)."""
        s = self.state
        s ^= s >> 12
        s = (s ^ (s << 25)) & _MASK64
        s ^= s >> 27
        self.state = s
        return ((s * _MULTIPLIER) & _MASK64) >> 32

    def random_f32(self) -> np.float32:
        """A float32 in [0, 1) from the top 24 bits of random_u32."""
        return np.float32((self.random_u32() >> 8) / 16777216.0)


def softmax_f32(logits: np.ndarray) -> np.ndarray:
    """float32 softmax of a vector: subtract the max, exponentiate, divide by the sequential sum."""
    e = np.exp(logits.astype(np.float32) - logits.max().astype(np.float32))  # [V]
    total = np.cumsum(e, dtype=np.float32)[-1]
    return e / total


def sample_argmax(values: np.ndarray) -> int:
    """Index of the largest value (the first one on ties)."""
    return int(np.argmax(values))


def sample_mult(probs: np.ndarray, coin: np.float32) -> int:
    """Inverse-cdf sample: the first index whose running float32 sum exceeds coin."""
    cdf = np.cumsum(probs, dtype=np.float32)  # [V]
    hits = np.flatnonzero(coin < cdf)
    return int(hits[0]) if hits.size else probs.shape[0] - 1


def sample_topp(probs: np.ndarray, topp: float, coin: np.float32) -> int:
    """Nucleus sample from the smallest high-probability prefix whose mass exceeds topp."""
    n = probs.shape[0]
    topp32 = np.float32(topp)
    cutoff = (np.float32(1.0) - topp32) / np.float32(n - 1)
    candidates = np.flatnonzero(probs >= cutoff)
    if candidates.size == 0:  # only when topp < 1/n: the nucleus is the top token (run.c reads out of bounds)
        return sample_argmax(probs)
    order = candidates[np.argsort(-probs[candidates], kind="stable")]  # descending p, ties by index
    cum = np.cumsum(probs[order], dtype=np.float32)  # [n0]
    over = np.flatnonzero(cum > topp32)
    last = int(over[0]) if over.size else order.shape[0] - 1
    r = np.float32(coin * cum[last])
    hits = np.flatnonzero(r < cum[:last + 1])
    return int(order[hits[0]]) if hits.size else int(order[last])


class Sampler:
    """Temperature, top-p and the RNG state: turns logits into the next token id like run.c."""

    def __init__(self, temperature: float, topp: float, seed: int):
        if not 0.0 <= temperature < float("inf"):
            raise ValueError(f"Sampler: temperature {temperature} must be finite and >= 0")
        if not 0.0 <= topp <= 1.0:
            raise ValueError(f"Sampler: top-p {topp} must be in [0, 1]")
        self.temperature = np.float32(temperature)
        self.topp = float(topp)
        self.rng = XorShiftRNG(seed)

    def __call__(self, logits: np.ndarray) -> int:
        """Next token id for a [V] vector of logits (consumes one coin unless greedy)."""
        if self.temperature == 0.0:
            return sample_argmax(logits)
        probs = softmax_f32(logits.astype(np.float32) / self.temperature)  # [V]
        coin = self.rng.random_f32()
        if self.topp <= 0.0 or self.topp >= 1.0:
            return sample_mult(probs, coin)
        return sample_topp(probs, self.topp, coin)
