"""Optimizers against hand-computed steps, convergence on a quadratic, and the lr schedules."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refq.autograd import Tensor, functional as F
from refq.autograd.optim import SGD, Adam, AdamW, cosine_lr, warmup_cosine_lr


def _param(value, dtype=np.float64) -> Tensor:
    return Tensor(np.array([value], dtype=dtype), requires_grad=True)


def _run(opt, p, grads):
    for g in grads:
        p.grad = np.array([g], dtype=p.dtype)
        opt.step()
    return p.data[0]


def test_adam_two_steps_match_hand_computation():
    # lr 0.1, betas (0.9, 0.999), eps 1e-8, p0 = 1, gradients 0.5 then -0.25:
    # t=1: m = 0.05, v = 2.5e-4, m_hat = 0.5, v_hat = 0.25       -> p = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.900000002
    # t=2: m = 0.02, v = 3.1225e-4, m_hat = 0.02 / 0.19, v_hat = 3.1225e-4 / 0.001999
    #      -> p = 0.900000002 - 0.1 * 0.1052631579 / (0.3952253808 + 1e-8) = 0.8733662987
    p = _param(1.0)
    opt = Adam([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    p.grad = np.array([0.5])
    opt.step()
    assert p.data[0] == pytest.approx(0.900000002, abs=1e-12)
    p.grad = np.array([-0.25])
    opt.step()
    assert p.data[0] == pytest.approx(0.8733662987078463, abs=1e-12)


def test_adamw_decays_weights_before_the_adam_step():
    # AdamW: p <- p (1 - lr wd) = 1 * (1 - 0.1 * 0.5) = 0.95, then the same Adam step as above (-0.1 at t=1)
    p = _param(1.0)
    assert _run(AdamW([p], lr=0.1, weight_decay=0.5), p, [0.5]) == pytest.approx(0.85, abs=1e-7)
    # Adam's L2 weight decay instead adds wd * p to the gradient: g = 0.5 + 0.5 -> the t=1 step is still -lr
    q = _param(1.0)
    assert _run(Adam([q], lr=0.1, weight_decay=0.5), q, [0.5]) == pytest.approx(0.9, abs=1e-7)


def test_sgd_momentum_and_weight_decay_by_hand():
    # momentum 0.9, gradient 1 twice: buf = 1 then 0.9 * 1 + 1 = 1.9; p = 1 - 0.1 - 0.19 = 0.71
    p = _param(1.0)
    assert _run(SGD([p], lr=0.1, momentum=0.9), p, [1.0, 1.0]) == pytest.approx(0.71)
    # weight decay 0.5 at p = 2 adds 1.0 to the gradient 1.0: p = 2 - 0.1 * 2 = 1.8
    q = _param(2.0)
    assert _run(SGD([q], lr=0.1, weight_decay=0.5), q, [1.0]) == pytest.approx(1.8)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.05, momentum=0.9), lambda ps: Adam(ps, lr=0.05),
                                  lambda ps: AdamW(ps, lr=0.05, weight_decay=0.0)])
def test_optimizers_minimize_a_quadratic(make, rng):
    target = rng.standard_normal(5).astype(np.float32)
    scale = np.linspace(0.5, 2.0, 5, dtype=np.float32)
    params = {"w": Tensor(np.zeros(5, np.float32), requires_grad=True)}
    opt = make(params)
    for _ in range(400):
        opt.zero_grad()
        loss = F.sum(F.mul(scale, F.pow(F.sub(params["w"], target), 2.0)))
        loss.backward()
        opt.step()
    np.testing.assert_allclose(params["w"].data, target, atol=1e-3)
    assert params["w"].dtype == np.float32


def test_step_assigns_new_arrays_and_skips_params_without_grad():
    w0, b0 = np.ones(3, np.float32), np.ones(2, np.float32)
    w, b = Tensor(w0, requires_grad=True), Tensor(b0, requires_grad=True)
    opt = Adam([w, b], lr=0.1)
    w.grad = np.ones(3, np.float32)
    opt.step()
    assert np.all(w0 == 1.0) and w.data is not w0  # the caller's array is untouched
    assert b.data is b0  # no grad: not updated
    assert w.data.dtype == np.float32 and np.all(w.data < 1.0)
    opt.zero_grad()
    assert w.grad is None and b.grad is None


def test_bad_hyperparameters_raise():
    p = _param(1.0)
    with pytest.raises(ValueError, match="lr=-1"):
        SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="momentum=1.5"):
        SGD([p], lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="ndarray"):
        Adam([np.ones(2)])


def test_cosine_lr_endpoints_and_midpoint():
    assert cosine_lr(0, 100, 1.0, 0.1) == pytest.approx(1.0)
    assert cosine_lr(50, 100, 1.0, 0.1) == pytest.approx(0.55)
    assert cosine_lr(100, 100, 1.0, 0.1) == pytest.approx(0.1)
    assert cosine_lr(500, 100, 1.0, 0.1) == pytest.approx(0.1)


def test_warmup_cosine_lr_shape():
    lrs = [warmup_cosine_lr(s, 10, 110, 2.0) for s in range(111)]
    assert lrs[0] == pytest.approx(0.2) and lrs[9] == pytest.approx(2.0)  # base * (step + 1) / warmup
    assert lrs[10] == pytest.approx(2.0) and lrs[60] == pytest.approx(1.0) and lrs[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    with pytest.raises(ValueError, match="warmup=20"):
        warmup_cosine_lr(0, 20, 10, 1.0)


@given(step=st.integers(0, 1000), total=st.integers(1, 1000), base=st.floats(1e-6, 1.0))
def test_cosine_lr_stays_between_final_and_base(step, total, base):
    lr = cosine_lr(step, total, base, final=0.1 * base)
    assert 0.1 * base - 1e-12 <= lr <= base + 1e-12
    assert math.isfinite(lr)
