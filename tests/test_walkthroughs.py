"""Every walkthrough runs top to bottom as a plain script, writes at least one PNG figure, and prints what its
`# expect:` comments say.

Each `# expect: ...` comment of a walkthrough has a check in EXPECTATIONS below, keyed by the walkthrough and
the comment's text; the check reads the printed lines it needs from the script's stdout. A comment without a
check fails the test, so a new expectation cannot go unchecked.
"""
import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.assets import assets_dir

WALKTHROUGHS = sorted((Path(__file__).resolve().parents[1] / "walkthroughs").glob("[0-9]*.py"))
NUMBER = r"([-+0-9.e]+)"


def line(out: str, pattern: str) -> re.Match:
    """The first printed line matching `pattern` (a regex searched in each line)."""
    for text in out.splitlines():
        m = re.search(pattern, text)
        if m:
            return m
    raise AssertionError(f"no printed line matches {pattern!r}")


def numbers(text: str) -> list[float]:
    """The numbers of a printed NumPy array or Python list, e.g. '[0.97  0.993 1. ]' -> [0.97, 0.993, 1.0]."""
    return [float(v) for v in re.findall(r"[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?", text)]


def rank_errors(out: str, layer: str, label: str) -> dict[int, float]:
    """{rank: relative output error} of one layer and method from the ASER walkthrough's error-vs-rank lines."""
    m = line(out, rf"^{re.escape(layer)} {re.escape(label)}\s+(r=.*)$")
    return {int(r): float(v) for r, v in re.findall(r"r=(\d+):([0-9.]+)", m.group(1))}


def ppl(out: str, method: str) -> float:
    return float(line(out, rf"^{method}\s+ppl {NUMBER}").group(1))


def check_fp_top1(out: str):
    from refq.sardfq import pipeline

    top1 = float(line(out, rf"FP32 top-1 on 300 test images: {NUMBER}%").group(1))
    _, _, manifest = pipeline.load_model(None)
    # 300 images: one binomial standard error is about 1.7 points, so allow three
    assert abs(top1 - 100 * manifest["test_top1"]) <= 5.0, (top1, manifest["test_top1"])


def check_soft_target(out: str):
    y0 = int(numbers(line(out, r"image labels y0: (.*)").group(1))[0])
    regions = [int(v) for v in numbers(line(out, r"image 0 regions .* labels: (.*)").group(1))]
    target = numbers(line(out, r"image 0 soft target: (.*)").group(1))
    mass = {c for c, v in enumerate(target) if v > 0}
    assert mass <= {y0, *regions} and y0 in mass, (target, y0, regions)
    assert abs(sum(target) - 1.0) < 0.01, target


def check_loss_falls(out: str):
    for method in ("psaq", "sardfq"):
        first, last = map(float, line(out, rf"^{method}: loss {NUMBER} -> {NUMBER}").groups())
        assert last < first, (method, first, last)


def check_error_vs_rank(out: str):
    for layer in ("layers.1.wv", "layers.0.w2"):
        curves = {label: rank_errors(out, layer, label) for label in ("lorc", "l2qer", "aser (ER only)", "aser")}
        for label, errs in curves.items():  # errors fall with r
            values = [errs[r] for r in sorted(errs)]
            assert all(b <= a + 1e-4 for a, b in zip(values, values[1:])), (layer, label, errs)
            assert values[-1] < values[0], (layer, label, errs)
        er_only = curves["aser (ER only)"]
        for r in (r for r in er_only if r >= 1):  # ASER (ER only) below LoRC and L2QER from r = 1 on ...
            others = (curves["lorc"][r], curves["l2qer"][r])
            full_rank_tie = er_only[r] == others[0] == others[1]  # ... until all three reconstruct E exactly
            assert full_rank_tie or er_only[r] < min(others), (layer, r, curves)
    wv = {label: rank_errors(out, "layers.1.wv", label) for label in ("lorc", "l2qer", "aser (ER only)", "aser")}
    assert all(wv["aser"][r] == min(c[r] for c in wv.values()) for r in wv["aser"]), wv  # AS+ER lowest on wv
    w2_aser, w2_er = rank_errors(out, "layers.0.w2", "aser"), rank_errors(out, "layers.0.w2", "aser (ER only)")
    assert any(w2_aser[r] > w2_er[r] for r in w2_aser), (w2_aser, w2_er)  # ... not on w2


def check_perplexity(out: str):
    methods = ("rtn", "smoothquant", "gptq", "lorc", "l2qer", "aser")
    values = {m: ppl(out, m) for m in methods}
    assert values["rtn"] == max(values.values()), values
    assert values["aser"] < values["l2qer"] and values["aser"] < values["lorc"], values


def check_boxes_vs_words(out: str):
    cared = [m for m in re.findall(r"^\s+GT \(.*\) '(.*)'$", out, flags=re.M) if m != "###"]
    found = int(line(out, r"detected boxes after locality-aware NMS: (\d+)").group(1))
    assert cared and abs(found - len(cared)) <= 1, (found, cared)


EXPECTATIONS = {
    "00_foundations": {
        "~1e-9": lambda out: float(line(out, rf"max \|diff\|: {NUMBER}").group(1)) < 1e-6,
        "below 0.01": lambda out: float(line(out, rf"W8A8 linear layer: relative output error {NUMBER}").group(1))
        < 0.01,
    },
    "01_sardfq": {
        "close to the checkpoint's test_top1": check_fp_top1,
        "< 1 (CLS->CLS excluded)": lambda out: all(
            0 < v < 1 for v in numbers(line(out, r"CLS attention to patches, last block: sums per head (.*)").group(1))
        ),
        "sums 1, min >= 0": lambda out: (
            all(abs(v - 1) < 1e-3 for v in numbers(line(out, r"prior shape .* sums (\[.*\]) min").group(1)))
            and float(line(out, rf"prior shape .* min {NUMBER}").group(1)) >= 0),
        "mass only on y0 and its region labels": check_soft_target,
        "each region upsampled 2x to 28x28": lambda out: (
            numbers(line(out, r"^crops (\(.*\))").group(1))[1:] == [1, 28, 28]),
        "the loss falls": check_loss_falls,
        ">= 99.5%": lambda out: (
            float(line(out, rf"integer path agrees .* on {NUMBER}% of the images").group(1)) >= 99.5),
    },
    "02_aser": {
        "calibration tokens 2640 | eval tokens 2048 | FP ppl 5.64": lambda out: (
            line(out, r"calibration tokens (\d+) \| eval tokens (\d+)").groups() == ("2640", "2048")
            and round(float(line(out, rf"FP ppl {NUMBER}").group(1)), 2) == 5.64),
        "errors fall with r; ER-only ASER below LoRC and L2QER for 1 <= r < full rank; AS+ER lowest on wv, not on w2":
            check_error_vs_rank,
        "rtn highest; aser lowest of the low-rank methods (trend ASER < L2QER < LoRC)": check_perplexity,
    },
    "03_spotter": {
        "joint fcr ~532k parameters": lambda out: (
            line(out, r"model: (\w+) recognizer (\w+) parameters (\d+)").groups()[:2] == ("joint", "fcr")
            and round(int(line(out, r"parameters (\d+)").group(1)) / 1000) == 532),
        "(256, 256) uint8": lambda out: line(out, r"image (\(\d+, \d+\)) (\w+)").groups() == ("(256, 256)", "uint8"),
        "about the number of cared GT words": check_boxes_vs_words,
    },
}


def expect_comments(script: Path) -> list[str]:
    """The text after '# expect:' of every such comment in the script."""
    return [m.group(1).strip() for m in re.finditer(r"#\s*expect:\s*(.*)$", script.read_text(), flags=re.M)]


@pytest.mark.parametrize("script", WALKTHROUGHS, ids=[p.stem for p in WALKTHROUGHS])
def test_every_expect_comment_has_a_check(script):
    ast.parse(script.read_text())  # a walkthrough that does not even parse fails here, fast
    missing = [c for c in expect_comments(script) if c not in EXPECTATIONS.get(script.stem, {})]
    assert not missing, f"{script.name}: no check in tests/test_walkthroughs.py for # expect: {missing}"


@pytest.mark.parametrize("script", WALKTHROUGHS, ids=[p.stem for p in WALKTHROUGHS])
def test_walkthrough_runs_saves_figures_and_prints_what_it_expects(script):
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
    checks = EXPECTATIONS.get(script.stem, {})
    for comment in expect_comments(script):
        result = checks[comment](proc.stdout)
        assert result is None or result, f"{script.name}: printed output does not match # expect: {comment}"
