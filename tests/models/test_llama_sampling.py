"""run.c's sampler: the xorshift stream, argmax, inverse-cdf sampling, top-p and temperature."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from refq.models.sampling import (Sampler, XorShiftRNG, sample_argmax, sample_mult, sample_topp, softmax_f32)

PROBS = arrays(np.float64, st.integers(2, 40), elements=st.floats(0.0, 1.0)).filter(lambda p: p.sum() > 0.01).map(
    lambda p: (p / p.sum()).astype(np.float32))


def xorshift_uint64(seed: int, n: int) -> list[int]:
    """The same generator written with NumPy uint64 arithmetic (wrap-around instead of masking)."""
    state, out = np.array([seed], np.uint64), []
    with np.errstate(over="ignore"):
        for _ in range(n):
            state ^= state >> np.uint64(12)
            state ^= state << np.uint64(25)
            state ^= state >> np.uint64(27)
            out.append(int((state * np.uint64(0x2545F4914F6CDD1D))[0] >> np.uint64(32)))
    return out


@given(seed=st.integers(1, 2**64 - 1))
def test_xorshift_matches_uint64_arithmetic(seed):
    rng = XorShiftRNG(seed)
    assert [rng.random_u32() for _ in range(5)] == xorshift_uint64(seed, 5)


@given(seed=st.integers(1, 2**64 - 1))
def test_random_f32_is_a_24_bit_fraction(seed):
    rng = XorShiftRNG(seed)
    for _ in range(5):
        u = rng.random_f32()
        assert u.dtype == np.float32 and 0.0 <= u < 1.0 and float(u) * 2**24 == int(float(u) * 2**24)


def test_seed_must_be_positive():
    with pytest.raises(ValueError, match="seed 0"):
        XorShiftRNG(0)


@given(probs=PROBS, coin=st.floats(0.0, 0.9999))
def test_sample_mult_inverts_the_cdf(probs, coin):
    i = sample_mult(probs, np.float32(coin))
    cdf = np.cumsum(probs, dtype=np.float32)
    assert np.float32(coin) < cdf[i] or i == len(probs) - 1
    assert i == 0 or not np.float32(coin) < cdf[i - 1]


def topp_reference(probs: np.ndarray, topp: float, coin: float) -> int:
    """Nucleus sampling from its definition, without the cutoff prefilter (float64, distinct probabilities)."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    mass, nucleus = 0.0, []
    for i in order:
        nucleus.append(i)
        mass += float(probs[i])
        if mass > topp:
            break
    r, cdf = coin * mass, 0.0
    for i in nucleus:
        cdf += float(probs[i])
        if r < cdf:
            return i
    return nucleus[-1]


@given(probs=PROBS, topp=st.floats(0.05, 0.95), coin=st.floats(0.0, 0.9999))
def test_sample_topp_matches_definition(probs, topp, coin):
    """Away from float32 rounding ties, the prefilter never removes a nucleus member."""
    sorted_p = np.sort(probs.astype(np.float64))[::-1]
    cum = np.cumsum(sorted_p)
    if np.min(np.abs(cum - topp)) < 1e-4:
        return  # too close to the nucleus edge for float32 and float64 sums to agree
    if np.min(np.abs(np.cumsum(sorted_p) / cum[np.argmax(cum > topp)] - coin)) < 1e-4:
        return
    assert sample_topp(probs, topp, np.float32(coin)) == topp_reference(probs, topp, coin)


def test_sample_topp_prefers_index_order_on_ties():
    probs = np.float32([0.25, 0.25, 0.25, 0.25])
    assert sample_topp(probs, 0.5, np.float32(0.0)) == 0
    assert sample_topp(probs, 0.5, np.float32(0.99)) == 2  # nucleus {0, 1, 2}: first cdf exceeding 0.5


def test_sample_topp_below_one_over_n_returns_the_top_token():
    """cutoff (1 - 0.25)/1 = 0.75 filters out every token; the nucleus is the single most probable one."""
    assert sample_topp(np.float32([0.4, 0.6]), 0.25, np.float32(0.9)) == 1
    assert sample_topp(np.float32([0.5, 0.5]), 0.25, np.float32(0.9)) == 0


def test_sampler_temperature_zero_is_argmax_and_draws_nothing():
    sampler = Sampler(0.0, 0.9, seed=42)
    logits = np.float32([0.1, 3.0, 3.0, -1.0])
    assert sampler(logits) == 1 == sample_argmax(logits)
    assert sampler.rng.state == 42


@given(seed=st.integers(1, 2**32), temperature=st.floats(0.1, 3.0), topp=st.sampled_from([0.0, 0.5, 0.9, 1.0]))
def test_sampler_draws_one_coin_per_token(seed, temperature, topp):
    logits = np.linspace(-2, 2, 17).astype(np.float32)
    sampler, twin = Sampler(temperature, topp, seed), XorShiftRNG(seed)
    for _ in range(3):
        token = sampler(logits)
        coin = twin.random_f32()
        probs = softmax_f32(logits / np.float32(temperature))
        expected = sample_mult(probs, coin) if topp in (0.0, 1.0) else sample_topp(probs, topp, coin)
        assert token == expected
    assert sampler.rng.state == twin.state


def test_softmax_f32():
    p = softmax_f32(np.float32([1000.0, 1000.0, -np.inf]))
    assert p.dtype == np.float32
    np.testing.assert_array_equal(p, np.float32([0.5, 0.5, 0.0]))


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="temperature -1"):
        Sampler(-1.0, 0.9, 1)
    with pytest.raises(ValueError, match="top-p 1.5"):
        Sampler(1.0, 1.5, 1)
    for temperature in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match=f"temperature {temperature} must be finite"):
            Sampler(temperature, 0.9, 1)
    with pytest.raises(ValueError, match="top-p nan"):
        Sampler(1.0, float("nan"), 1)
