"""Reverse-mode automatic differentiation over NumPy arrays.

A `Tensor` wraps an ndarray. Every differentiable operation is a `Function`
subclass with a `forward(*arrays, **kw) -> ndarray` and a
`backward(grad_out) -> tuple[ndarray | None, ...]` (one entry per Tensor input).
`Function.apply` runs the forward and, when gradients are wanted, records the
node so that `Tensor.backward` can walk the graph in reverse topological order.

Semantics (documented because micrograd's users tripped over them):
* `backward()` *accumulates* into the `.grad` of every leaf that requires grad;
  call `zero_grad()` (or `optimizer.zero_grad()`) between steps.
* The topological sort is iterative, so graphs of any depth work.
* A node used several times receives the sum of all its gradient contributions.
* Inside `with no_grad():` no graph is recorded (fast inference path).
* Parameters default to float32; pass float64 arrays for gradient checks,
  the dtype of the inputs is kept.

References: Baydin et al., "Automatic differentiation in machine learning: a
survey", JMLR 2018 (reverse mode, Sec. 3.2).
"""
from __future__ import annotations

import contextlib

import numpy as np

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


class _GradMode:
    enabled = True


@contextlib.contextmanager
def no_grad():
    """Context manager: operations inside record no graph and keep no inputs."""
    previous = _GradMode.enabled
    _GradMode.enabled = False
    try:
        yield
    finally:
        _GradMode.enabled = previous


def is_grad_enabled() -> bool:
    return _GradMode.enabled


def as_array(x, dtype=None) -> np.ndarray:
    """Array view of a Tensor, ndarray or Python scalar (float32 for plain Python numbers)."""
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, np.ndarray):
        return x if dtype is None else x.astype(dtype, copy=False)
    return np.asarray(x, dtype=np.float32 if dtype is None else dtype)


class Tensor:
    """An ndarray with an optional gradient and the Function that produced it."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "name")
    __array_priority__ = 1000  # so that ndarray + Tensor dispatches to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, np.generic):  # NumPy scalars (e.g. a full reduction) keep their dtype
            data = np.asarray(data)
        if isinstance(data, np.ndarray):
            arr = data if dtype is None else data.astype(dtype, copy=False)
        else:
            arr = np.asarray(data, dtype=np.float32 if dtype is None else dtype)
        if requires_grad and arr.dtype.type not in _FLOAT_DTYPES:
            raise ValueError(f"Tensor: requires_grad needs a float dtype, got {arr.dtype}")
        self.data = arr
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._ctx: Function | None = None
        self.name = name

    # ---- basic properties -------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{flag})"

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    # ---- backward -----------------------------------------------------------
    def _topo_order(self) -> list["Tensor"]:
        """Nodes reachable from self, every node after all nodes that consume it."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                for parent in node._ctx.parents:
                    if id(parent) not in visited:
                        stack.append((parent, False))
        return order[::-1]

    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`.

        `grad` defaults to 1 for a scalar; non-scalar outputs need an explicit
        upstream gradient of the same shape.
        """
        if not self.requires_grad:
            raise ValueError("backward: this tensor does not require grad (no leaf below it requires grad)")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward: output has shape {self.shape}; pass grad= for non-scalar outputs")
            grad = np.ones_like(self.data)
        grad = as_array(grad, self.data.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, tensor has shape {self.shape}")
        grads = {id(self): grad}
        for node in self._topo_order():
            g = grads.pop(id(node), None)
            if g is None:
                continue
            ctx = node._ctx
            if ctx is None:  # a leaf
                if node.requires_grad:
                    node.grad = g.copy() if node.grad is None else node.grad + g
                continue
            parent_grads = ctx.backward(g)
            if not isinstance(parent_grads, tuple):
                parent_grads = (parent_grads,)
            assert len(parent_grads) == len(ctx.parents), f"{type(ctx).__name__}.backward returned {len(parent_grads)} grads for {len(ctx.parents)} inputs"
            for parent, pg in zip(ctx.parents, parent_grads):
                if pg is None or not parent.requires_grad:
                    continue
                assert pg.shape == parent.shape, f"{type(ctx).__name__}: grad shape {pg.shape} != input shape {parent.shape}"
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg

    # ---- operator sugar (ops live in refq.autograd.ops_*) --------------------
    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().sub(self, other)

    def __rsub__(self, other):
        return _ops().sub(other, self)

    def __mul__(self, other):
        return _ops().mul(self, other)

    def __rmul__(self, other):
        return _ops().mul(other, self)

    def __truediv__(self, other):
        return _ops().div(self, other)

    def __rtruediv__(self, other):
        return _ops().div(other, self)

    def __neg__(self):
        return _ops().neg(self)

    def __pow__(self, exponent):
        return _ops().pow(self, exponent)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __getitem__(self, index):
        return _ops().getitem(self, index)

    def reshape(self, *shape):
        return _ops().reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def transpose(self, *axes):
        return _ops().transpose(self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else (axes or None))

    @property
    def T(self):
        return _ops().transpose(self, None)

    def sum(self, axis=None, keepdims=False):
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops().mean(self, axis=axis, keepdims=keepdims)


def _ops():
    from refq.autograd import functional  # late import: functional imports this module

    return functional


class Function:
    """One differentiable operation. Subclasses implement `forward` and `backward`.

    `forward` receives plain ndarrays (Tensor inputs unwrapped) and keyword
    arguments; it stores on `self` only what `backward` needs (nothing when
    `self.needs_grad` is False: no_grad mode or no input requiring grad). `backward`
    receives d(loss)/d(output) and returns one gradient (or None) per
    Tensor input, each with that input's shape.
    """

    __slots__ = ("parents", "__dict__")

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError(f"forward not implemented for {type(self).__name__}")

    def backward(self, grad_out):
        raise NotImplementedError(f"backward not implemented for {type(self).__name__}")

    @classmethod
    def apply(cls, *inputs: Tensor, **kwargs) -> Tensor:
        """Run `forward` on the inputs' arrays; record the node if any input requires grad.

        Every positional input must be a Tensor (wrap constants with `Tensor(x)`);
        non-differentiable arguments (axes, shapes, strides) go in `kwargs`.
        """
        ctx = cls()
        for x in inputs:
            assert isinstance(x, Tensor), f"{cls.__name__}.apply: positional inputs must be Tensors, got {type(x).__name__}"
        ctx.needs_grad = _GradMode.enabled and any(x.requires_grad for x in inputs)  # forward may skip its saves
        out = Tensor(ctx.forward(*[x.data for x in inputs], **kwargs))
        if ctx.needs_grad:
            ctx.parents = inputs
            out.requires_grad = True
            out._ctx = ctx
        return out
