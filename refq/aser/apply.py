"""Quantize every linear layer of a model with one method, and run the model with the quantized layers.

Both models route their linear layers through a named hook `ops.linear(name, x, w[, b])`:
* stories260K LLaMA (refq.models.llama): the 7 linears of each block, "layers.{l}.{wq,wk,wv,wo,w1,w3,w2}";
  the classifier (tied to the embedding), embeddings, norms, attention matmuls and KV cache stay in float
  (docs/aser.md, A1: SmoothQuant's quantize_llama_like choice);
* MiniLM BERT (refq.models.bert): the 6 linears of each layer, "encoder.layer.{i}.{attention.self.query,
  attention.self.key, attention.self.value, attention.output.dense, intermediate.dense, output.dense}", with
  their biases (added after the quantized product, never quantized), through the `ops` argument of
  refq.models.bert.encode / embed_sentences.

Input groups (`llama_groups`, `bert_groups`): linears that read the same normalised input (q/k/v; w1/w3 or
intermediate) are "foldable": one smoothing vector can be folded into the norm's gain. With smoothing scope
"shared" they share m (w_j = column max over the group); the others (wo/w2, attention.output.dense,
output.dense) have no preceding norm: SmoothQuant leaves them unsmoothed, ASER smooths them online.

References: docs/aser.md, A1 (which layers) and A4 (shared smoothing); Xiao et al., "SmoothQuant", ICML 2023
(scales folded into the preceding norm; its LLaMA recipe leaves wo/w2 unsmoothed).
"""
from __future__ import annotations

import sys

import numpy as np

from refq.aser.methods import DEFAULT_SCOPE, quantize_linear
from refq.aser.qlinear import QuantizedLinear, forward_int, forward_sim
from refq.aser.settings import QuantSettings
from refq.aser.smoothing import weight_column_absmax
from refq.aser.types import BERT_LINEARS, LLAMA_LINEARS, LayerStats
from refq.autograd import functional as F
from refq.autograd.engine import Tensor, as_array
from refq.models.ops import ModelOps


def llama_linear_weights(params: dict, cfg) -> dict[str, np.ndarray]:
    """Hook name -> weight [O, I] of every block linear of a llama2.c model."""
    return {f"layers.{l}.{w}": params[w][l] for l in range(cfg.n_layers) for w in LLAMA_LINEARS}


def llama_groups(cfg) -> list[tuple[tuple[str, ...], bool]]:
    """(names sharing one input, foldable into a preceding RMSNorm) for every block."""
    out = []
    for l in range(cfg.n_layers):
        p = f"layers.{l}."
        out += [((p + "wq", p + "wk", p + "wv"), True), ((p + "wo",), False),
                ((p + "w1", p + "w3"), True), ((p + "w2",), False)]
    return out


def bert_linear_weights(params: dict, cfg) -> dict[str, np.ndarray]:
    """Hook name -> weight [O, I] of every encoder linear of a BERT model."""
    return {f"encoder.layer.{i}.{n}": params[f"encoder.layer.{i}.{n}.weight"]
            for i in range(cfg.num_hidden_layers) for n in BERT_LINEARS}


def bert_groups(cfg) -> list[tuple[tuple[str, ...], bool]]:
    """(names sharing one input, foldable into a preceding LayerNorm) for every encoder layer."""
    out = []
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        out += [((p + BERT_LINEARS[0], p + BERT_LINEARS[1], p + BERT_LINEARS[2]), True),
                ((p + BERT_LINEARS[3],), False), ((p + BERT_LINEARS[4],), True), ((p + BERT_LINEARS[5],), False)]
    return out


def quantize_layers(weights: dict[str, np.ndarray], stats: dict[str, LayerStats], method: str,
                    settings: QuantSettings, groups, verbose: bool = False) -> dict[str, QuantizedLinear]:
    """Name -> QuantizedLinear for every layer in `groups`, with the method's smoothing scope resolved."""
    scope = settings.smooth_scope or DEFAULT_SCOPE.get(method, "layer")
    missing = sorted({n for names, _ in groups for n in names} - set(stats))
    if missing:
        raise ValueError(f"quantize_layers: no calibration statistics for {missing[:4]} ({len(missing)} layers)")
    layers = {}
    for names, foldable in groups:
        shared = scope == "shared" and foldable
        colmax = weight_column_absmax(*(weights[n] for n in names)) if shared else None  # [I] or None
        layer_settings = settings
        if scope == "shared" and not foldable and method == "smoothquant":
            layer_settings = settings.with_(smooth=False)  # no norm to fold into: left unsmoothed (SmoothQuant)
        for n in names:
            layers[n] = quantize_linear(method, weights[n], stats[n], layer_settings, colmax)
            if verbose:
                print(f"quantize {method}: {n} {weights[n].shape} rank {layers[n].rank}", file=sys.stderr)
    return layers


class QuantizedOps(ModelOps):
    """Linear hook that runs the quantized layers (simulation or integer path) and the rest in float."""

    def __init__(self, layers: dict[str, QuantizedLinear], integer: bool = False):
        self.layers = layers
        self.integer = integer

    def linear(self, name, x, w, b=None):
        """x [..., I] -> [..., O]: the quantized layer `name` if there is one, else x @ w.T + b in float."""
        layer = self.layers.get(name)
        if layer is None:
            return F.linear(x, w, b)  # [..., I] -> [..., O]
        xa = as_array(x)
        forward = forward_int if self.integer else forward_sim
        y = forward(layer, xa.reshape(-1, xa.shape[-1]), None if b is None else as_array(b))  # [N, O]
        return Tensor(y.reshape(*xa.shape[:-1], layer.d_out))  # [..., O]; inference only, no graph
