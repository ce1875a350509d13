"""Every op in F.OPS is gradient-checked against float64 finite differences on hypothesis-drawn cases.

CASES maps each op name to a builder `case(draw) -> (fn, inputs)`: fn maps input Tensors to an
output Tensor, inputs are float64 arrays. Values are drawn away from kinks (relu/abs at 0, clip
bounds, ties of max/maximum/max-pool), where the derivative is undefined.
A test fails if an op has no case; float32 inputs must give float32 outputs and gradients.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from refq.autograd import Tensor, functional as F
from tests.gradcheck import check_grad


def floats(draw, shape, lo=-2.0, hi=2.0):
    """A float64 array of `shape` with elements in [lo, hi]."""
    elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return draw(hnp.arrays(np.float64, shape, elements=elements))


def away(x, points, gap=0.05):
    """x with every element within `gap` of one of `points` pushed to distance `gap`."""
    x = np.array(x, dtype=np.float64)
    for p in points:
        close = np.abs(x - p) < gap
        x[close] = p + gap * np.where(x[close] >= p, 1.0, -1.0)
    return x


def distinct(draw, shape):
    """Values whose pairwise differences are at least 0.2 (no ties)."""
    n = int(np.prod(shape))
    perm = np.array(draw(st.permutations(range(n))), dtype=np.float64)
    return (0.4 * perm - 0.2 * n + floats(draw, (n,), 0.0, 0.2)).reshape(shape)


def shape(draw, min_dims=1, max_dims=3, max_side=3):
    return draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side))


def pair_shapes(draw, n=2):
    return draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=3, max_side=3)).input_shapes


def binary(op, lo_b=-2.0, hi_b=2.0, away_b=()):
    def case(draw):
        sa, sb = pair_shapes(draw)
        return op, [floats(draw, sa), away(floats(draw, sb, lo_b, hi_b), away_b, 0.5)]
    return case


def unary(op, lo=-2.0, hi=2.0, kinks=()):
    def case(draw):
        return op, [away(floats(draw, shape(draw), lo, hi), kinks)]
    return case


def case_pow(draw):
    p = draw(st.sampled_from([-1.5, 0.5, 1.0, 2.0, 3.0]))
    lo = -2.0 if p in (1.0, 2.0, 3.0) else 0.3
    return (lambda x: F.pow(x, p)), [floats(draw, shape(draw), lo, 2.0)]


def case_clip(draw):
    return (lambda x: F.clip(x, -0.5, 0.7)), [away(floats(draw, shape(draw)), (-0.5, 0.7))]


def case_extremum(op):
    def case(draw):
        sa, sb = pair_shapes(draw)
        ka = draw(hnp.arrays(np.int64, sa, elements=st.integers(-8, 8)))
        kb = draw(hnp.arrays(np.int64, sb, elements=st.integers(-8, 8)))
        return op, [0.2 * ka, 0.2 * kb + 0.1]  # on offset lattices: never a tie
    return case


def case_where(draw):
    sc, sa, sb = pair_shapes(draw, 3)
    cond = draw(hnp.arrays(np.bool_, sc))
    return (lambda a, b: F.where(cond, a, b)), [floats(draw, sa), floats(draw, sb)]


def case_matmul(draw):
    ba, bb = pair_shapes(draw)
    ba, bb = ba[-2:], bb[-2:]  # trailing axes: suffixes of broadcastable shapes stay broadcastable
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    sa = (k,) if draw(st.booleans()) else ba + (n, k)
    sb = (k,) if draw(st.booleans()) else bb + (k, m)
    return F.matmul, [floats(draw, sa), floats(draw, sb)]


def case_linear(draw):
    lead = shape(draw, 0, 2)
    i, o = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    inputs = [floats(draw, lead + (i,)), floats(draw, (o, i))]
    if draw(st.booleans()):
        return F.linear, inputs + [floats(draw, (o,))]
    return F.linear, inputs


def case_embedding(draw):
    v, d = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    ids = draw(hnp.arrays(np.int64, shape(draw, 1, 2), elements=st.integers(0, v - 1)))
    return (lambda w: F.embedding(w, ids)), [floats(draw, (v, d))]


def case_reduce(op, values=floats):
    def case(draw):
        s = shape(draw)
        axis = draw(st.one_of(st.none(), st.integers(-len(s), len(s) - 1),
                              st.lists(st.integers(0, len(s) - 1), min_size=1, unique=True).map(tuple)))
        keepdims = draw(st.booleans())
        return (lambda x: op(x, axis=axis, keepdims=keepdims)), [values(draw, s)]
    return case


def case_reshape(draw):
    s = shape(draw)
    target = draw(st.sampled_from([(-1,), s[::-1], s + (1,), (1, -1)]))
    return (lambda x: F.reshape(x, target)), [floats(draw, s)]


def case_transpose(draw):
    s = shape(draw)
    axes = draw(st.one_of(st.none(), st.permutations(range(len(s))).map(tuple)))
    return (lambda x: F.transpose(x, axes)), [floats(draw, s)]


def case_getitem(draw):
    s = shape(draw)
    index = draw(st.one_of(hnp.basic_indices(s, allow_newaxis=True), hnp.integer_array_indices(s),
                           hnp.arrays(np.bool_, s)))
    return (lambda x: F.getitem(x, index)), [floats(draw, s)]


def case_concat(draw):
    s = shape(draw)
    axis = draw(st.integers(0, len(s) - 1))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    parts = [floats(draw, s[:axis] + (n,) + s[axis + 1:]) for n in sizes]
    return (lambda *xs: F.concat(xs, axis=axis)), parts


def case_stack(draw):
    s = shape(draw, 0, 2)
    axis = draw(st.integers(-len(s) - 1, len(s)))
    parts = [floats(draw, s) for _ in range(draw(st.integers(1, 3)))]
    return (lambda *xs: F.stack(xs, axis=axis)), parts


def case_pad(draw):
    s = shape(draw)
    widths = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in s)
    return (lambda x: F.pad(x, widths, value=0.5)), [floats(draw, s)]


def case_roll(draw):
    s = shape(draw)
    axis = draw(st.one_of(st.none(), st.integers(0, len(s) - 1)))
    shift = draw(st.integers(-4, 4))
    return (lambda x: F.roll(x, shift, axis)), [floats(draw, s)]


def case_flip(draw):
    s = shape(draw)
    axis = draw(st.one_of(st.none(), st.integers(-len(s), len(s) - 1), st.just((0,))))
    return (lambda x: F.flip(x, axis)), [floats(draw, s)]


def case_softmax(op):
    def case(draw):
        s = shape(draw)
        axis = draw(st.integers(-len(s), len(s) - 1))
        return (lambda x: op(x, axis=axis)), [floats(draw, s, -3.0, 3.0)]
    return case


def case_norm(op, n_params):
    def case(draw):
        s = shape(draw, 1, 3, 4)
        if s[-1] == 1:
            s = s + (3,)
        params = [floats(draw, s[-1:]) for _ in range(n_params)]
        if draw(st.booleans()):  # all parameters given
            return (lambda x, *p: op(x, *p)), [floats(draw, s)] + params
        return (lambda x: op(x, *([None] * n_params))), [floats(draw, s)]
    return case


def case_conv2d(draw):
    g, cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pad, dil = draw(st.integers(0, 1)), draw(st.integers(1, 2))
    H = max(1, dil * (kh - 1) + 1 - 2 * pad) + draw(st.integers(0, 2))
    W = max(1, dil * (kw - 1) + 1 - 2 * pad) + draw(st.integers(0, 2))
    x, w = floats(draw, (draw(st.integers(1, 2)), g * cg, H, W)), floats(draw, (g * og, cg, kh, kw))
    kw_args = dict(stride=(sh, sw), padding=pad, dilation=dil, groups=g)
    if draw(st.booleans()):
        return (lambda x, w, b: F.conv2d(x, w, b, **kw_args)), [x, w, floats(draw, (g * og,))]
    return (lambda x, w: F.conv2d(x, w, **kw_args)), [x, w]


def case_pool(op, values):
    def case(draw):
        kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        stride = draw(st.one_of(st.none(), st.integers(1, 3)))
        pad = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
        H, W = max(1, kh - 2 * pad[0]) + draw(st.integers(0, 2)), max(1, kw - 2 * pad[1]) + draw(st.integers(0, 2))
        x = values(draw, (draw(st.integers(1, 2)), draw(st.integers(1, 2)), H, W))
        return (lambda x: op(x, (kh, kw), stride, pad)), [x]
    return case


def case_resize(draw):
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    x = floats(draw, (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5))))
    return (lambda x: F.resize_bilinear(x, size)), [x]


def case_crop(draw):
    B, C, H, W = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    R = draw(st.integers(1, 3))
    boxes = np.stack([floats(draw, (R,), -1.0, W + 1.0), floats(draw, (R,), -1.0, H + 1.0),
                      floats(draw, (R,), -1.0, W + 1.0), floats(draw, (R,), -1.0, H + 1.0)], axis=1)
    index = draw(hnp.arrays(np.int64, (R,), elements=st.integers(0, B - 1)))
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return (lambda x: F.crop_and_resize(x, boxes, index, size)), [floats(draw, (B, C, H, W))]


def case_cross_entropy(draw):
    s = shape(draw, 2, 3)
    if draw(st.booleans()):
        target = draw(hnp.arrays(np.int64, s[:-1], elements=st.integers(0, s[-1] - 1)))
    else:
        p = floats(draw, s, 0.01, 1.0)
        target = p / p.sum(axis=-1, keepdims=True)
    return (lambda z: F.cross_entropy(z, target)), [floats(draw, s, -4.0, 4.0)]


CASES = {
    "add": binary(F.add), "sub": binary(F.sub), "mul": binary(F.mul),
    "div": binary(F.div, 0.5, 2.0), "neg": unary(F.neg), "pow": case_pow,
    "exp": unary(F.exp), "log": unary(F.log, 0.2, 3.0), "sqrt": unary(F.sqrt, 0.2, 3.0),
    "abs": unary(F.abs, kinks=(0.0,)), "clip": case_clip,
    "maximum": case_extremum(F.maximum), "minimum": case_extremum(F.minimum), "where": case_where,
    "matmul": case_matmul, "linear": case_linear, "embedding": case_embedding,
    "sum": case_reduce(F.sum), "mean": case_reduce(F.mean), "max": case_reduce(F.max, distinct),
    "var": case_reduce(F.var),
    "reshape": case_reshape, "transpose": case_transpose, "getitem": case_getitem,
    "concat": case_concat, "stack": case_stack, "pad": case_pad, "roll": case_roll, "flip": case_flip,
    "relu": unary(F.relu, kinks=(0.0,)), "gelu": unary(F.gelu, -3.0, 3.0), "silu": unary(F.silu, -3.0, 3.0),
    "tanh": unary(F.tanh, -3.0, 3.0), "sigmoid": unary(F.sigmoid, -3.0, 3.0),
    "softmax": case_softmax(F.softmax), "log_softmax": case_softmax(F.log_softmax),
    "layer_norm": case_norm(F.layer_norm, 2), "rms_norm": case_norm(F.rms_norm, 1),
    "conv2d": case_conv2d, "max_pool2d": case_pool(F.max_pool2d, distinct),
    "avg_pool2d": case_pool(F.avg_pool2d, floats),
    "resize_bilinear": case_resize, "crop_and_resize": case_crop,
    "cross_entropy": case_cross_entropy, "mse": binary(F.mse),
}


def test_every_op_has_a_gradcheck_case():
    assert set(F.OPS) == set(CASES), f"missing: {set(F.OPS) - set(CASES)}, unknown: {set(CASES) - set(F.OPS)}"


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    fn, inputs = CASES[name](data.draw)
    check_grad(fn, inputs, np.random.default_rng(0), label=name)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=max(1, settings().max_examples // 5))  # a dtype check: a fifth of the profile
@given(data=st.data())
def test_float32_stays_float32(name, data):
    fn, inputs = CASES[name](data.draw)
    tensors = [Tensor(a.astype(np.float32), requires_grad=True) for a in inputs]
    out = fn(*tensors)
    assert out.dtype == np.float32, f"{name}: output dtype {out.dtype}"
    out.backward(np.ones(out.shape, dtype=np.float32))
    for i, t in enumerate(tensors):
        assert t.grad is None or t.grad.dtype == np.float32, f"{name}: grad {i} has dtype {t.grad.dtype}"
