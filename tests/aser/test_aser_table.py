"""The docs/aser.md table generator (refq.aser.table) with a stand-in for the model runs: layout, caching, settings."""
from __future__ import annotations

from refq.aser.table import ABLATIONS, METHODS, RANKS, SETTINGS, run_model, settings_for


def test_settings_give_ranks_only_to_low_rank_methods():
    assert settings_for("rtn", 4, 8, 4).rank is None and settings_for("aser", 4, 8, 4).rank == 4
    assert settings_for("aser", 4, 8, 4, rank=0, smooth=False).rank == 0
    assert settings_for("gptq", 4, None, 8).abits is None


def test_run_model_builds_three_tables_and_runs_each_cell_once():
    calls = []

    def fake(method, settings):
        calls.append((method, settings))
        return {"method": method, "ppl": 5.0 + len(calls), "overhead_pct": 1.0, "layer_err_mean": 0.1}

    records, lines = run_model("toy", {"fp": "5.0"}, fake, "ppl", 4)
    assert len(records["main"]) == len(METHODS) * len(SETTINGS)
    assert len(records["ranks"]) == 3 * len(RANKS) and len(records["ablation"]) == len(ABLATIONS)
    assert len(calls) == len(set(calls))  # repeated cells (e.g. ASER W4A8 r=4) come from the cache
    assert len(calls) < len(records["main"]) + len(records["ranks"]) + len(records["ablation"])
    table_rows = [line for line in lines if line.startswith("| ")]
    assert sum(line.startswith("| aser |") for line in table_rows) == 2
    assert lines[0] == "### toy: ppl (FP 5.0)"
