"""`refq spot` command line: JSON and text output, overlay, eval without --pred, a short seeded training run."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from refq.cli import main
from refq.io.npz import load_npz
from refq.spotter import model as M
from refq.spotter.synth import generate_dataset
from refq.spotter.train import TrainConfig, save_checkpoint

TINY = M.SpotterConfig(backbone=(4, 6, 8, 8), det_ctx=4, rec_channels=(8, 8, 8), text_scale=64.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spot")
    generate_dataset(root / "set", 2, seed=5, size=(64, 128))
    params = M.init_params(TINY, np.random.default_rng(0))
    params["det.score.bias"][:] = 10.0  # every pixel is "text": boxes everywhere
    params["rec.out.bias"][TINY.alphabet.encode("a")[0]] = 50.0  # every column reads "a"
    save_checkpoint(root / "tiny.npz", params, TINY, TrainConfig(), [], 0, "test", 0, "none")
    return root


def test_json_records(data, capsys):
    assert main(["spot", "run", str(data / "set" / "img_1.png"), "--json", "--checkpoint", str(data / "tiny.npz")]) == 0
    words = json.loads(capsys.readouterr().out)
    assert isinstance(words, list) and words
    for w in words:
        assert {"box", "text", "score"} <= set(w)
        x0, y0, x1, y1 = w["box"]
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 64
        assert w["text"] == "a" and 0.0 <= w["score"] <= 1.0


def test_several_images_text_lines_and_overlay(data, capsys):
    images = [str(data / "set" / f"img_{i}.png") for i in (1, 2)]
    overlay = data / "over.png"
    assert main(["spot", "run", *images, "--checkpoint", str(data / "tiny.npz"), "--overlay", str(overlay)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    name, box, text, score = lines[0].split("\t")
    assert name in ("img_1.png", "img_2.png") and len(box.split(",")) == 4 and text == "a" and 0 <= float(score) <= 1
    assert (data / "over_img_1.png").exists() and (data / "over_img_2.png").exists()
    assert main(["spot", "run", *images, "--json", "--checkpoint", str(data / "tiny.npz")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [item["image"] for item in payload] == ["img_1.png", "img_2.png"]


def test_eval_runs_the_model(data, capsys):
    assert main(["spot", "eval", "--data", str(data / "set"), "--checkpoint", str(data / "tiny.npz"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 2 and result["images_per_second"] > 0
    assert {"precision", "recall", "hmean"} <= set(result["detection"]) and result["end_to_end"] is not None
    assert 0.0 <= result["recognition"]["word_accuracy"] <= 1.0


def test_errors_exit_2(data):
    assert main(["spot", "run", str(data / "missing.png"), "--checkpoint", str(data / "tiny.npz")]) == 2
    assert main(["spot", "run", str(data / "set" / "img_1.png"), "--checkpoint", str(data / "none.npz")]) == 2
    assert main(["spot", "run", str(data / "set" / "img_1.png"), "--decoder", "lexicon",
                 "--checkpoint", str(data / "tiny.npz")]) == 2


def png_bytes(width: int, height: int, idat: bytes = b"") -> bytes:
    """A grayscale PNG declaring width x height, with the given (usually too short) compressed pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b""))


def spot_error(data, capsys, image, *extra) -> str:
    assert main(["spot", "run", str(image), "--checkpoint", str(data / "tiny.npz"), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_unreadable_and_truncated_images_are_one_line_errors(data, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    assert "bad.png is not a readable image" in spot_error(data, capsys, tmp_path / "bad.png")
    whole = (data / "set" / "img_1.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])
    assert "cut.png is not a readable image" in spot_error(data, capsys, tmp_path / "cut.png")


def test_huge_images_are_refused_from_their_header(data, tmp_path, capsys):
    (tmp_path / "big.png").write_bytes(png_bytes(12000, 12000))  # ~60 bytes declaring 144 megapixels
    err = spot_error(data, capsys, tmp_path / "big.png")
    assert "big.png is 12000x12000" in err and "--max-pixels" in err
    (tmp_path / "wide.png").write_bytes(png_bytes(5000, 5000))
    assert "5000x5000" in spot_error(data, capsys, tmp_path / "wide.png")
    err = spot_error(data, capsys, tmp_path / "wide.png", "--max-pixels", "30000000")  # past the cap: decoded
    assert "wide.png is not a readable image" in err
    (tmp_path / "bomb.png").write_bytes(png_bytes(20000, 20000))  # beyond Pillow's own limit
    assert "decompression bomb" in spot_error(data, capsys, tmp_path / "bomb.png", "--max-pixels", str(10 ** 9))


def test_overlay_never_overwrites_an_input_image(data, tmp_path, capsys):
    image = tmp_path / "in.png"
    image.write_bytes((data / "set" / "img_1.png").read_bytes())
    before = image.read_bytes()
    assert "refusing to overwrite" in spot_error(data, capsys, image, "--overlay", str(image))
    (tmp_path / "link.png").symlink_to(image)
    assert "refusing to overwrite" in spot_error(data, capsys, image, "--overlay", str(tmp_path / "link.png"))
    assert image.read_bytes() == before


def test_train_writes_a_seeded_checkpoint(data, capsys):
    out = data / "trained.npz"
    argv = ["spot", "train", "--data", str(data / "set"), "--val", str(data / "set"), "--out", str(out),
            "--steps", "2", "--batch-size", "2", "--crop-words", "4", "--warmup", "1", "--eval-every", "2",
            "--seed", "3", "--rec-only", "--rec-pad", "0.2"]
    assert main(argv) == 0
    params, manifest = load_npz(out)
    assert manifest["seed"] == 3 and manifest["command"].startswith("refq spot train --data")
    assert manifest["config"]["tasks"] == "rec" and manifest["config"]["rec_pad"] == 0.2
    assert manifest["step"] == 2 and manifest["history"][-1]["step"] == 2
    assert "word_acc" in json.loads(capsys.readouterr().out)
    M.check_params(params, M.SpotterConfig(tasks="rec"))
    again = data / "again.npz"  # a second stage started from the first keeps its provenance
    assert main(argv[:6] + ["--out", str(again), "--steps", "1", "--warmup", "0", "--eval-every", "1", "--rec-only",
                            "--init", str(out)]) == 0
    _, manifest2 = load_npz(again)
    assert manifest2["init"]["seed"] == 3 and manifest2["init"]["command"] == manifest["command"]


@pytest.mark.parametrize("extra", [["--decoder", "beam"], ["--lexicon", "LEX"], ["--int8"]])
def test_decoders_and_int8(data, capsys, extra):
    lexicon = data / "lexicon.txt"
    lexicon.write_text("b\nab\na\n")
    extra = [str(lexicon) if e == "LEX" else e for e in extra]
    image = str(data / "set" / "img_1.png")
    assert main(["spot", "run", image, "--json", "--checkpoint", str(data / "tiny.npz"), *extra]) == 0
    words = json.loads(capsys.readouterr().out)
    assert words and all(w["text"] == "a" for w in words)


def test_merge_options_reach_the_decoder(data, monkeypatch, capsys):
    import refq.spotter.infer as infer
    from refq.spotter.decode import LINE_MERGE_GAP

    seen = []
    real = infer.spot_images
    monkeypatch.setattr(infer, "spot_images", lambda *a, **kw: seen.append(kw["merge_gap"]) or real(*a, **kw))
    image, ckpt = str(data / "set" / "img_1.png"), str(data / "tiny.npz")
    for extra in ([], ["--merge-gap", "0.25"], ["--no-merge"]):
        assert main(["spot", "run", image, "--json", "--checkpoint", ckpt] + extra) == 0
    capsys.readouterr()
    assert seen == [LINE_MERGE_GAP, 0.25, None]  # the CLI default is the decoder's


def test_eval_takes_the_decoding_options(data, monkeypatch, capsys):
    import refq.spotter.infer as infer
    from refq.spotter.decode import NMS_IOU, SCORE_THRESH

    seen = []
    real = infer.evaluate_dataset
    monkeypatch.setattr(infer, "evaluate_dataset", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    base = ["spot", "eval", "--data", str(data / "set"), "--checkpoint", str(data / "tiny.npz"), "--json"]
    assert main(base) == 0
    assert main(base + ["--no-merge", "--score-thresh", "0.6", "--nms-iou", "0.3"]) == 0
    capsys.readouterr()
    assert (seen[0]["score_thresh"], seen[0]["nms_iou"]) == (SCORE_THRESH, NMS_IOU)
    assert (seen[1]["score_thresh"], seen[1]["nms_iou"], seen[1]["merge_gap"]) == (0.6, 0.3, None)


def test_read_image_caps_pixels_for_datasets_too(data, tmp_path):
    from refq.data.image import read_image
    from refq.spotter.synth import load_sample

    image = read_image(data / "set" / "img_1.png", "L")
    assert image.shape == (64, 128) and image.dtype == np.uint8
    with pytest.raises(ValueError, match=r"128x64 = 8,192 pixels, more than the limit of 8,000$"):
        read_image(data / "set" / "img_1.png", max_pixels=8000)
    (tmp_path / "img_1.png").write_bytes(png_bytes(10000, 10000))
    (tmp_path / "gt_img_1.txt").write_text("")
    with pytest.raises(ValueError, match="img_1.png is 10000x10000"):
        load_sample(tmp_path, "img_1")
