"""refq.bench.vit_numpy against the autograd ViT, and `refq bench autograd` in-process through refq.cli.main."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.bench import vit_numpy
from refq.cli import main
from refq.models import vit

TINY = vit.ViTConfig(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2)
FIELDS = {"case", "batch", "embed_dim", "depth", "num_heads", "grads", "repeat", "autograd_best_ms",
          "autograd_median_ms", "numpy_best_ms", "numpy_median_ms", "ratio", "ratio_median", "loss_abs_diff",
          "max_rel_grad_diff", "machine", "blas_threads"}


def _params(cfg: vit.ViTConfig, rng: np.random.Generator) -> dict:
    """float32 parameters with weights larger than the 0.02 init and non-trivial norms, so every path carries signal."""
    p = vit.init_params(cfg, rng)
    return {k: (v * 10 if v.ndim > 1 else v + rng.normal(0.0, 0.3, v.shape)).astype(np.float32) for k, v in p.items()}


def _autograd_grads(params: dict, cfg: vit.ViTConfig, x: np.ndarray, labels: np.ndarray):
    """(loss, parameter grads, image grad) from the autograd ViT."""
    tensors = vit.as_tensors(params, requires_grad=True)
    xt = Tensor(x, requires_grad=True)
    loss = F.cross_entropy(vit.forward(tensors, cfg, xt), labels)
    loss.backward()
    return loss.item(), {k: t.grad for k, t in tensors.items()}, xt.grad


def _assert_close(ours: np.ndarray, ref: np.ndarray, label: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == np.float32, label
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()) + 1e-12, err_msg=label)


@settings(deadline=None, max_examples=6)
@given(batch=st.integers(1, 3), grid=st.integers(1, 3), patch=st.integers(1, 3), chans=st.integers(1, 2),
       heads=st.integers(1, 3), head_dim=st.integers(4, 5), depth=st.integers(1, 2), classes=st.integers(2, 4),
       distilled=st.booleans(), seed=st.integers(0, 2**16))
def test_numpy_gradients_equal_autograd(batch, grid, patch, chans, heads, head_dim, depth, classes, distilled, seed):
    """head_dim >= 4: with D = 2 features a LayerNorm outputs +-1 whatever its input, its true gradient is 0
    and both sides return float32 rounding noise."""
    cfg = vit.ViTConfig(img_size=grid * patch, patch_size=patch, in_chans=chans, num_classes=classes,
                        embed_dim=heads * head_dim, depth=depth, num_heads=heads, distilled=distilled)
    rng = np.random.default_rng(seed)
    params = _params(cfg, rng)
    x = rng.standard_normal((batch, chans, cfg.img_size, cfg.img_size)).astype(np.float32)
    labels = rng.integers(0, classes, size=batch)
    ref_loss, ref_grads, ref_dx = _autograd_grads(params, cfg, x, labels)
    loss, grads, dx = vit_numpy.loss_and_grads(params, cfg, x, labels)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert set(grads) == set(params)
    for key, g in grads.items():
        _assert_close(g, ref_grads[key], key)
    _assert_close(dx, ref_dx, "input")


def test_logits_equal_autograd_forward(rng):
    params = _params(TINY, rng)
    x = rng.standard_normal((4, 2, 8, 8)).astype(np.float32)
    logits, _ = vit_numpy.forward(params, TINY, x)
    ref = vit.forward(params, TINY, Tensor(x)).data
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-6)


def test_gradient_switches_and_inputs_untouched(rng):
    params = _params(TINY, rng)
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    labels = np.array([0, 2, 1])
    copies = ({k: v.copy() for k, v in params.items()}, x.copy(), labels.copy())
    _, all_grads, all_dx = vit_numpy.loss_and_grads(params, TINY, x, labels)
    _, grads, dx = vit_numpy.loss_and_grads(params, TINY, x, labels, param_grads=False)
    assert grads == {}
    np.testing.assert_array_equal(dx, all_dx)
    _, grads, dx = vit_numpy.loss_and_grads(params, TINY, x, labels, input_grad=False)
    assert dx is None and set(grads) == set(params)
    for key, g in grads.items():
        np.testing.assert_array_equal(g, all_grads[key])
    for key, v in copies[0].items():
        np.testing.assert_array_equal(params[key], v)
    np.testing.assert_array_equal(x, copies[1])
    np.testing.assert_array_equal(labels, copies[2])


def test_bad_inputs_are_value_errors(rng):
    params = _params(TINY, rng)
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 8\)"):
        vit_numpy.forward(params, TINY, x[:, :1])
    with pytest.raises(ValueError, match="label 3"):
        vit_numpy.loss_and_grads(params, TINY, x, np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        vit_numpy.loss_and_grads(params, TINY, x, np.array([0, 1, 2]))
    logits, cache = vit_numpy.forward(params, TINY, x)
    with pytest.raises(ValueError, match="no gradient"):
        vit_numpy.backward(params, TINY, cache, np.ones_like(logits), param_grads=False, input_grad=False)


def test_bench_autograd_json_records(capsys):
    assert main(["bench", "autograd", "--batch", "2", "--repeat", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert [r["case"] for r in records] == ["vit_train_step", "input_grad_step", "small_shapes"]
    for r in records:
        assert FIELDS <= set(r)
        assert r["batch"] == 2 and r["repeat"] == 1
        assert r["max_rel_grad_diff"] < 1e-4 and r["loss_abs_diff"] < 1e-5
        assert r["autograd_best_ms"] > 0 and r["numpy_best_ms"] > 0 and r["ratio"] > 0
        assert r["machine"]["cores"] >= 1
    assert [r["grads"] for r in records] == ["params", "input", "params"]
    share = records[1]
    assert share["sardfq_images"] > 2 and 0 < share["network_share"] < 2
    assert "numba threads" in err  # the machine line and progress go to stderr


def test_bench_autograd_table(capsys):
    assert main(["bench", "autograd", "--cases", "small_shapes", "--batch", "1", "--repeat", "2", "--no-share"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("machine: ") and "BLAS threads" in lines[0]
    assert "ratio" in lines[2]
    assert lines[3].split()[:6] == ["small_shapes", "1", "32", "2", "2", "params"]
    assert len(lines) == 4  # no SARDFQ share line without input_grad_step


def test_bench_autograd_bad_batch_is_a_clean_error(capsys):
    assert main(["bench", "autograd", "--batch", "0"]) == 2
    assert "batch=0" in capsys.readouterr().err
