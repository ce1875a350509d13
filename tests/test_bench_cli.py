"""`refq bench gemm` in-process through refq.cli.main: JSON fields, exactness, the table, bad shapes."""
from __future__ import annotations

import json

import pytest

from refq.cli import main

FIELDS = {"m", "n", "k", "repeat", "pause_s", "burst", "kernel", "numpy_f32_gflops", "int8_gops", "int4_gops", "int8_vs_numpy",
          "int4_vs_numpy", "int4_vs_int8", "exact_int8", "exact_int4", "exact", "machine"}


def test_bench_gemm_json_records(capsys):
    assert main(["bench", "gemm", "--sizes", "8", "--shapes", "3x5x7", "--repeat", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert [(r["m"], r["n"], r["k"]) for r in records] == [(8, 8, 8), (3, 5, 7)]
    for r in records:
        assert FIELDS <= set(r)
        assert r["exact"] is True and r["exact_int8"] is True and r["exact_int4"] is True
        for key in ("numpy_f32_gflops", "int8_gops", "int4_gops", "int8_vs_numpy", "int4_vs_numpy"):
            assert r[key] > 0
        machine = r["machine"]
        assert machine["cores"] >= 1 and machine["numba_threads"] >= 1 and machine["cpu"]
    assert "numba threads" in err  # the machine line and progress go to stderr


def test_bench_gemm_table(capsys):
    assert main(["bench", "gemm", "--sizes", "5", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("machine: ") and "numba threads" in lines[0]
    assert "exact" in lines[1]
    assert lines[2].split()[:3] == ["5", "5", "5"] and lines[2].split()[-1] == "true"


def test_bench_gemm_portable_kernels(capsys):
    assert main(["bench", "gemm", "--shapes", "9x17x3", "--repeat", "1", "--kernel", "portable", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["kernel"] == "portable" and record["exact"] is True


def test_bench_gemm_reports_the_kernel_and_the_cpu_features(capsys, monkeypatch):
    from refq.kernels import dispatch

    monkeypatch.setenv(dispatch.ENV, "portable")
    assert main(["bench", "gemm", "--shapes", "4x33x9", "--repeat", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("kernel: portable") and "(" in first  # machine line: CPU (LLVM name: features)
    monkeypatch.delenv(dispatch.ENV)
    assert main(["bench", "gemm", "--shapes", "4x33x9", "--repeat", "1", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["kernel"] == dispatch.select() and record["machine"]["simd"]
    assert record["pack_int8_ms"] >= 0 and record["exact"] is True


def test_bench_gemm_bad_shape_is_a_clean_error(capsys):
    assert main(["bench", "gemm", "--shapes", "3x4"]) == 2
    assert "'3x4'" in capsys.readouterr().err


def test_bench_gemm_pause_is_recorded_and_checked(capsys):
    assert main(["bench", "gemm", "--sizes", "4", "--repeat", "2", "--pause", "0.01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["pause_s"] == 0.01
    assert main(["bench", "gemm", "--sizes", "4", "--pause", "-1"]) == 2
    assert "pause=-1" in capsys.readouterr().err


def test_interleaved_times_sleeps_before_every_call(monkeypatch):
    import refq.bench as bench

    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("sleep", s)))
    t = bench.interleaved_times({"a": lambda: events.append("a"), "b": lambda: events.append("b")}, 2, pause=0.05)
    assert events == [("sleep", 0.05), "a", ("sleep", 0.05), "b"] * 2 and t["a"].shape == t["b"].shape == (2,)
    events.clear()
    t = bench.interleaved_times({"a": lambda: events.append("a"), "b": lambda: events.append("b")}, 1, 0.05, burst=3)
    assert events == [("sleep", 0.05), "a", "a", "a", ("sleep", 0.05), "b", "b", "b"] and t["a"].shape == (3,)
    with pytest.raises(ValueError, match="pause=-1"):
        bench.interleaved_times({"a": lambda: None}, 1, pause=-1)
    with pytest.raises(ValueError, match="burst=0"):
        bench.interleaved_times({"a": lambda: None}, 1, burst=0)


def test_bench_compile_warm_cache_skips_compilation(capsys, tmp_path):
    assert main(["bench", "compile", "--cache-dir", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    cold, warm = result["cold"], result["warm"]
    assert set(cold["first_calls_s"]) == set(warm["first_calls_s"]) and "gemm_int8" in cold["first_calls_s"]
    assert any(tmp_path.rglob("*.nbi")), "Numba wrote no cache index into NUMBA_CACHE_DIR"
    # loading cached code is much faster than compiling it (compilation takes seconds per kernel)
    assert sum(warm["first_calls_s"].values()) < 0.5 * sum(cold["first_calls_s"].values())


def test_bench_quant_json_and_bad_shape(capsys):
    assert main(["bench", "quant", "--shapes", "3x5", "17x64", "--repeat", "2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert [(r["t"], r["d"]) for r in records] == [(3, 5), (17, 64)]
    assert all(r["exact"] and r["kernel_gbs"] > 0 and r["copy_gbs"] > 0 for r in records)
    assert main(["bench", "quant", "--shapes", "3by5"]) == 2
    assert "3by5" in capsys.readouterr().err
