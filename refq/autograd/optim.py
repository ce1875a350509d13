"""Optimizers (SGD, Adam, AdamW) with PyTorch semantics, and learning-rate schedules.

  SGD:   g <- g + wd p ;  buf <- mu buf + g (buf = g at the first step) ;  p <- p - lr buf
  Adam:  g <- g + wd p  (L2 penalty added to the gradient, as torch.optim.Adam)
         m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
         p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)          (Kingma & Ba 2015, Alg. 1)
  AdamW: p <- p (1 - lr wd), then the Adam step without the L2 term   (Loshchilov & Hutter 2019, Alg. 2)
Each step assigns a new array to `p.data` (the caller's arrays are never
modified in place) and keeps the parameter's dtype. Parameters whose `.grad` is
None are skipped; the step count t is kept per parameter.
Schedules are plain functions of the step; set `opt.lr = schedule(step, ...)`
before `opt.step()`.

References: Kingma & Ba, "Adam: A method for stochastic optimization", ICLR
2015; Loshchilov & Hutter, "Decoupled weight decay regularization", ICLR 2019;
Loshchilov & Hutter, "SGDR: Stochastic gradient descent with warm restarts",
ICLR 2017 (cosine schedule, Eq. 5); Goyal et al., "Accurate, large minibatch
SGD", 2017 (linear warm-up).
"""
from __future__ import annotations

import math

import numpy as np

from refq.autograd.engine import Tensor


def _param_list(params) -> list:
    """Parameters from a list/tuple of Tensors or a dict of them (its values)."""
    params = list(params.values()) if isinstance(params, dict) else list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"optimizer: parameter {i} is a {type(p).__name__}, expected a Tensor")
    if not params:
        raise ValueError("optimizer: got an empty parameter list")
    return params


def _check_hparams(lr: float, weight_decay: float) -> None:
    if not lr >= 0.0:
        raise ValueError(f"optimizer: lr={lr} must be >= 0")
    if not weight_decay >= 0.0:
        raise ValueError(f"optimizer: weight_decay={weight_decay} must be >= 0")


class Optimizer:
    """Holds the parameter list and per-parameter state; subclasses implement `_update`."""

    def __init__(self, params, lr: float, weight_decay: float):
        _check_hparams(lr, weight_decay)
        self.params = _param_list(params)
        self.lr, self.weight_decay = lr, weight_decay
        self.state = [dict() for _ in self.params]

    def zero_grad(self) -> None:
        """Forget the accumulated gradients of all parameters."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                p.data = self._update(p.data, p.grad.astype(p.data.dtype, copy=False), state).astype(p.data.dtype, copy=False)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict) -> np.ndarray:
        raise NotImplementedError(f"_update not implemented for {type(self).__name__}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional (heavy-ball) momentum and L2 weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum={momentum} must be in [0, 1)")
        self.momentum = momentum

    def _update(self, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state.get("momentum")
            state["momentum"] = buf = g.copy() if buf is None else self.momentum * buf + g
            g = buf
        return p - self.lr * g


class Adam(Optimizer):
    """Adam with bias correction; weight_decay is an L2 term added to the gradient (torch.optim.Adam)."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{type(self).__name__}: betas={betas} must lie in [0, 1)")
        if not eps > 0.0:
            raise ValueError(f"{type(self).__name__}: eps={eps} must be > 0")
        self.betas, self.eps = betas, eps

    def _update(self, p, g, state):
        b1, b2 = self.betas
        if self.weight_decay and self.decoupled:
            p = p * (1.0 - self.lr * self.weight_decay)  # AdamW: decay the weights, not the gradient
        elif self.weight_decay:
            g = g + self.weight_decay * p
        t = state.get("t", 0) + 1
        m = b1 * state.get("m", 0.0) + (1.0 - b1) * g
        v = b2 * state.get("v", 0.0) + (1.0 - b2) * (g * g)
        state.update(t=t, m=m, v=v)
        m_hat = m / (1.0 - b1 ** t)
        v_hat = v / (1.0 - b2 ** t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (default 1e-2, as torch.optim.AdamW)."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def cosine_lr(step: int, total: int, base: float, final: float = 0.0) -> float:
    """Cosine decay from `base` at step 0 to `final` at step `total` (constant after)."""
    if total <= 0:
        raise ValueError(f"cosine_lr: total={total} must be > 0")
    progress = min(max(step, 0), total) / total
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_lr(step: int, warmup: int, total: int, base: float) -> float:
    """Linear warm-up base * (step + 1) / warmup for `warmup` steps, then cosine decay to 0 at `total`."""
    if warmup < 0 or total <= warmup:
        raise ValueError(f"warmup_cosine_lr: need 0 <= warmup={warmup} < total={total}")
    if step < warmup:
        return base * (step + 1) / warmup
    return cosine_lr(step - warmup, total - warmup, base)
