"""Every walkthrough runs top to bottom as a plain script and writes at least one PNG figure."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.assets import assets_dir

WALKTHROUGHS = sorted((Path(__file__).resolve().parents[1] / "walkthroughs").glob("[0-9]*.py"))


@pytest.mark.parametrize("script", WALKTHROUGHS, ids=[p.stem for p in WALKTHROUGHS])
def test_walkthrough_runs_and_saves_figures(script):
    if "aser" in script.stem:  # the ASER walkthrough runs on the public stories260K checkpoint
        from tests.assets import asset
        asset("llama2c/stories260K.bin")
    figures = script.parent / "figures"
    start = time.time()
    env = dict(os.environ, REFQ_ASSETS=str(assets_dir()), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.strip(), f"{script.name} printed nothing"
    fresh = [p for p in figures.glob("*.png") if p.stat().st_mtime >= start - 1]
    assert fresh, f"{script.name} wrote no PNG figure into {figures}"
