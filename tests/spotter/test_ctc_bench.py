"""The CTC benchmark on a small batch: agreement with the reference and the report (no timing assertions)."""
from __future__ import annotations

import argparse
import json

import pytest

from refq.bench.ctc import add_arguments, format_table, run


def test_bench_reports_agreement_with_the_reference():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--n", "3", "--t", "12", "--k", "7", "--min-len", "1", "--max-len", "5",
                              "--repeat", "2"])
    report = run(args)
    assert (report["n"], report["t"], report["k"], report["repeat"]) == (3, 12, 7, 2)
    assert report["max_abs_loss_diff"] < 1e-10 and report["max_abs_grad_diff"] < 1e-10
    assert 0 < report["serial_best_ms"] <= report["serial_median_ms"]
    assert 0 < report["parallel_best_ms"] <= report["parallel_median_ms"]
    json.dumps(report)  # --json needs plain Python numbers
    table = format_table(report)
    assert table.startswith("machine: ") and "numba parallel" in table and "N=3 T=12 K=7" in table


def test_bench_rejects_targets_longer_than_the_frames():
    with pytest.raises(ValueError, match="max_len=8 needs T >= 17"):
        run(argparse.Namespace(n=2, t=16, k=5, min_len=1, max_len=8, repeat=1, seed=0))
