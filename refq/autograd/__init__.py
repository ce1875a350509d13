"""Hand-written reverse-mode autograd over NumPy: Tensor, Function, no_grad and the op library `functional`."""
from refq.autograd.engine import Function, Tensor, is_grad_enabled, no_grad
from refq.autograd import functional

__all__ = ["Function", "Tensor", "functional", "is_grad_enabled", "no_grad"]
