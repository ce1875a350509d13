"""A bidirectional LSTM on the refq autograd: the recurrent (CRNN) recognizer head of the FCR-vs-RNN ablation.

One LSTM step (Hochreiter & Schmidhuber 1997; the gate layout of Graves 2013, Eq. 3-7, without peepholes):
    [i, f, g, o] = x_t W_ih^T + h_{t-1} W_hh^T + b          [R, 4H]
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)
The backward direction reads each sequence reversed *within its own length* (frames t >= W_i are
padding and never enter the state); outputs of both directions are concatenated per frame and zeroed
on the padding. The time loop is sequential, T steps of small matrix products: the cost the paper's
fully convolutional recognizer (FCR) avoids.

References:
    Hochreiter & Schmidhuber, "Long short-term memory", Neural Computation 1997.
    Graves, "Generating sequences with recurrent neural networks", arXiv:1308.0850, 2013, Eq. 3-7.
    Shi et al., "CRNN", TPAMI 2017 (BiLSTM over CNN columns, then CTC); Sui et al., ICPR 2018 (CRNN vs FCR); docs/spotter.md, T10.
"""
from __future__ import annotations

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F


def init_bilstm(prefix: str, d_in: int, hidden: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniform(+-1/sqrt(H)) weights of both directions, forget-gate bias 1."""
    bound = 1.0 / np.sqrt(hidden)
    params = {}
    for direction in ("fwd", "bwd"):
        name = f"{prefix}.{direction}"
        params[name + ".w_ih"] = rng.uniform(-bound, bound, (4 * hidden, d_in)).astype(np.float32)
        params[name + ".w_hh"] = rng.uniform(-bound, bound, (4 * hidden, hidden)).astype(np.float32)
        bias = np.zeros(4 * hidden, np.float32)
        bias[hidden:2 * hidden] = 1.0  # forget gate
        params[name + ".bias"] = bias
    return params


def lstm(p: dict, name: str, x, lengths: np.ndarray) -> Tensor:
    """One-direction LSTM over x [R, T, D]; the state freezes after frame lengths[r] - 1: -> [R, T, H]."""
    R, T = x.shape[:2]
    hidden = p[name + ".w_hh"].shape[1]
    xw = F.linear(x, p[name + ".w_ih"], p[name + ".bias"])  # [R, T, D] -> [R, T, 4H]
    h = Tensor(np.zeros((R, hidden), np.float32))  # [R, H]
    c = Tensor(np.zeros((R, hidden), np.float32))  # [R, H]
    outs = []
    for t in range(T):
        gates = F.add(F.getitem(xw, (slice(None), t)), F.linear(h, p[name + ".w_hh"]))  # [R, 4H]
        i, f = F.sigmoid(gates[:, :hidden]), F.sigmoid(gates[:, hidden:2 * hidden])  # [R, H] each
        g, o = F.tanh(gates[:, 2 * hidden:3 * hidden]), F.sigmoid(gates[:, 3 * hidden:])  # [R, H] each
        c_new = F.add(F.mul(f, c), F.mul(i, g))  # [R, H]
        h_new = F.mul(o, F.tanh(c_new))  # [R, H]
        live = (t < lengths)[:, None]  # [R, 1] frames inside the sequence
        c, h = F.where(live, c_new, c), F.where(live, h_new, h)
        outs.append(h)
    return F.stack(outs, axis=1)  # T x [R, H] -> [R, T, H]


def reverse_index(lengths: np.ndarray, T: int) -> np.ndarray:
    """Frame index [R, T] that reverses the first lengths[r] frames of every row and keeps the padding."""
    t = np.arange(T)[None, :]  # [1, T]
    L = np.asarray(lengths)[:, None]  # [R, 1]
    return np.where(t < L, L - 1 - t, t)  # [R, T], its own inverse


def bilstm(p: dict, prefix: str, x, lengths) -> Tensor:
    """Bidirectional LSTM: x [R, T, D] -> [R, T, 2H], zero on the padded frames t >= lengths[r]."""
    lengths = np.asarray(lengths)
    R, T = x.shape[:2]
    rows = np.arange(R)[:, None]  # [R, 1]
    rev = reverse_index(lengths, T)  # [R, T]
    fwd = lstm(p, prefix + ".fwd", x, lengths)  # [R, T, H]
    bwd = F.getitem(lstm(p, prefix + ".bwd", F.getitem(x, (rows, rev)), lengths), (rows, rev))  # [R, T, H]
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)[:, :, None]  # [R, T, 1]
    return F.mul(F.concat([fwd, bwd], axis=2), mask)  # -> [R, T, 2H]
