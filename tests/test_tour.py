"""`refq tour` (the README's main job) runs on the shipped weights and writes its figures."""
import re

from refq.cli import main


def test_tour_quick_runs_every_part(tmp_path, capsys):
    assert main(["tour", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bit-exact vs int64 NumPy: True" in out
    fp = float(re.search(r"FP32 top-1 on the shipped 500-image sample: ([\d.]+)%", out).group(1))
    assert fp > 85.0  # the shipped ViT reaches 90.11% on the full test set
    assert len(re.findall(r"W4A4, calibration from .*top-1 [\d.]+%", out)) == 2
    se = float(re.search(r"one standard error of a top-1 figure is about ([\d.]+) points", out).group(1))
    assert abs(se - 100 * (fp / 100 * (1 - fp / 100) / 500) ** 0.5) < 0.06
    assert re.search(r"float: .*\[\d/4 words right", out) and re.search(r"int8 : .*\[\d/4 words right", out)
    assert (tmp_path / "sardfq_images.png").stat().st_size > 0
    assert (tmp_path / "spotter_overlay.png").stat().st_size > 0
