"""Synthetic scenes: word list, font splits, determinism, box validity, ICDAR files and `refq spot synth`.

Needs the Debian packages fonts-dejavu-core and fonts-liberation2 (installed by .ci/run).
"""
from __future__ import annotations

import json
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.cli import main
from refq.spotter import fonts as fonts_mod
from refq.spotter.icdar import BOM, parse_icdar, read_icdar_gt, read_icdar_result
from refq.spotter.fonts import font_paths, load_font
from refq.spotter.synth import SynthWord, _styled_line, generate_dataset, generate_scene, list_samples, load_sample
from refq.spotter.words import VOCABULARY, sample_token

PRINTABLE = set(string.ascii_letters + string.digits + string.punctuation)


def test_vocabulary_is_large_unique_and_printable():
    assert len(VOCABULARY) >= 1000
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    assert all(w and set(w) <= PRINTABLE for w in VOCABULARY)


def test_sample_token_is_seeded_and_varied():
    a = [sample_token(np.random.default_rng(3)) for _ in range(3)]
    assert a == [sample_token(np.random.default_rng(3)) for _ in range(3)]
    rng = np.random.default_rng(0)
    tokens = [sample_token(rng) for _ in range(600)]
    assert all(t and set(t) <= PRINTABLE and t != "###" for t in tokens)
    assert any(t.isupper() for t in tokens) and any(t.islower() for t in tokens) and any(t.istitle() for t in tokens)
    assert any(c.isdigit() for t in tokens for c in t) and any("$" in t for t in tokens)
    assert any(t[-1] in ".,!?" for t in tokens) and any("-" in t for t in tokens)
    assert len(set(tokens)) > 400
    with pytest.raises(ValueError, match="p_dictionary=2"):
        sample_token(rng, p_dictionary=2)


def test_font_splits_are_disjoint_and_installed():
    train, heldout = fonts_mod.font_paths("train"), fonts_mod.font_paths("heldout")
    assert len(train) >= 6 and len(heldout) >= 3
    assert not {p.name for p in train} & {p.name for p in heldout}
    assert not {p.resolve() for p in train} & {p.resolve() for p in heldout}
    assert all(p.is_file() for p in train + heldout)
    assert fonts_mod.required_packages() == ["fonts-dejavu-core", "fonts-liberation2"]
    with pytest.raises(ValueError, match="'test'"):
        fonts_mod.font_paths("test")


def test_missing_font_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(fonts_mod, "FONT_DIRS", (tmp_path,))
    monkeypatch.delenv("REFQ_FONT_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="fonts-dejavu-core"):
        fonts_mod.font_paths("train")


def _check_words(image, words):
    h, w = image.shape[:2]
    for word in words:
        x0, y0, x1, y1 = word.box
        assert all(isinstance(v, int) for v in word.box)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, word
        assert word.text and not any(c.isspace() for c in word.text)
        assert word.dnc == (word.text == "###")
    boxes = np.array([wd.box for wd in words]).reshape(-1, 4)
    iw = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    ih = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    overlap = (iw > 0) & (ih > 0)
    assert not np.any(overlap & ~np.eye(len(boxes), dtype=bool)), boxes


@settings(max_examples=12)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(64, 256), (256, 256), (96, 128)]), st.sampled_from(["L", "RGB"]),
       st.sampled_from(["train", "heldout"]))
def test_scene_boxes_inside_and_disjoint(seed, size, mode, fonts):
    image, words = generate_scene(np.random.default_rng(seed), size=size, fonts=fonts, mode=mode)
    assert image.dtype == np.uint8
    assert image.shape == (size if mode == "L" else size + (3,))
    assert len(words) <= 6
    _check_words(image, words)


def test_scene_is_deterministic_per_seed():
    a_img, a_words = generate_scene(np.random.default_rng(7))
    b_img, b_words = generate_scene(np.random.default_rng(7))
    assert a_img.tobytes() == b_img.tobytes() and a_words == b_words
    c_img, c_words = generate_scene(np.random.default_rng(8))
    assert a_img.tobytes() != c_img.tobytes() and a_words != c_words
    d_img, _ = generate_scene(np.random.default_rng(7), fonts="heldout")
    assert a_img.tobytes() != d_img.tobytes()


def test_dont_care_words_are_rare_but_present():
    words = [w for seed in range(150) for w in generate_scene(np.random.default_rng(seed), size=(64, 256))[1]]
    frac = np.mean([w.dnc for w in words])
    assert len(words) >= 150 * 2  # scenes hold 1-6 words, about 3 on average
    assert 0.005 < frac < 0.12, frac


@settings(max_examples=10)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(64, 256), (256, 256)]), st.sampled_from(["L", "RGB"]))
def test_styled_scene_boxes_inside_and_disjoint(seed, size, mode):
    image, words = generate_scene(np.random.default_rng(seed), size=size, mode=mode, style=1.0)
    assert image.shape[:2] == size
    _check_words(image, words)


@pytest.mark.parametrize("sigma, shear", [(1.0, 0.0), (0.0, 0.3), (0.8, 0.25)])
def test_styled_line_boxes_hold_their_own_ink(sigma, shear):
    font = load_font(str(font_paths("train")[0]), 24)
    plain_alpha, plain_boxes, _ = _styled_line(["Hill", "top"], font, 0.0, 0.0)
    alpha, boxes, (left, top) = _styled_line(["Hill", "top"], font, sigma, shear)
    ink = alpha >= 32
    inside = np.zeros_like(ink)
    for x0, y0, x1, y1 in boxes:
        assert ink[y0 - top:y1 - top, x0 - left:x1 - left].any()
        assert ink[y0 - top, x0 - left:x1 - left].any() and ink[y1 - 1 - top, x0 - left:x1 - left].any()  # tight
        assert ink[y0 - top:y1 - top, x0 - left].any() and ink[y0 - top:y1 - top, x1 - 1 - left].any()
        inside[y0 - top:y1 - top, x0 - left:x1 - left] = True
    assert not np.any(ink & ~inside)
    assert boxes[0][2] <= boxes[1][0]  # the words stay apart
    if sigma > 0:  # bold: more ink than the plain line
        assert ink.sum() > (plain_alpha >= 32).sum()
    if shear > 0:  # slant: the top of the tall 'H' stem moves right of its foot
        x0, y0, x1, y1 = boxes[0]
        first_ink = [np.nonzero(alpha[row - top] >= 32)[0].min() for row in (y0 + 1, y1 - 2)]
        assert first_ink[0] - first_ink[1] >= shear * (y1 - y0) / 2


def test_style_changes_scenes_only_when_positive():
    for seed in range(5):
        a_img, a_words = generate_scene(np.random.default_rng(seed))
        b_img, b_words = generate_scene(np.random.default_rng(seed), style=0.0)
        c_img, _ = generate_scene(np.random.default_rng(seed), style=1.0)
        assert a_img.tobytes() == b_img.tobytes() and a_words == b_words
        assert a_img.tobytes() != c_img.tobytes()


def test_bad_arguments_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"size=\(16, 256\)"):
        generate_scene(rng, size=(16, 256))
    with pytest.raises(ValueError, match="'CMYK'"):
        generate_scene(rng, mode="CMYK")
    with pytest.raises(ValueError, match="'test'"):
        generate_scene(rng, fonts="test")
    with pytest.raises(ValueError, match="style=1.5"):
        generate_scene(rng, style=1.5)


def test_dataset_round_trip_and_determinism(tmp_path):
    summary = generate_dataset(tmp_path / "a", 3, seed=5, size=(64, 128))
    assert summary["n_images"] == 3 and json.loads((tmp_path / "a" / "synth.json").read_text()) == summary
    assert list_samples(tmp_path / "a") == ["img_1", "img_2", "img_3"]
    for i in (1, 2, 3):
        image, words = generate_scene(np.random.default_rng([5, 0, i]), size=(64, 128))
        loaded_image, loaded_words = load_sample(tmp_path / "a", f"img_{i}")
        np.testing.assert_array_equal(loaded_image, image)
        assert loaded_words == words
    raw = (tmp_path / "a" / "gt_img_1.txt").read_bytes()
    assert raw.startswith(BOM.encode("utf-8")) and raw.endswith(b"\r\n")
    generate_dataset(tmp_path / "b", 2, seed=5, size=(64, 128))
    for name in ("img_1.png", "gt_img_1.txt", "img_2.png", "gt_img_2.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    generate_dataset(tmp_path / "c", 1, seed=5, size=(64, 128), fonts="heldout")
    assert (tmp_path / "a" / "img_1.png").read_bytes() != (tmp_path / "c" / "img_1.png").read_bytes()


def test_icdar_reader_variants(tmp_path):
    path = tmp_path / "gt_img_1.txt"
    path.write_bytes(b"1,2,30,2,30,20,1,20,Hello, world\n\n377.5,117,463,117,465,130,378,130,###\n")
    words = read_icdar_gt(path)
    assert [w.text for w in words] == ["Hello, world", "###"] and [w.dnc for w in words] == [False, True]
    np.testing.assert_array_equal(words[1].quad[0], [377.5, 117])
    with_bom = tmp_path / "gt_img_2.txt"
    with_bom.write_bytes(b"\xef\xbb\xbf5,5,9,5,9,9,5,9,caf\xc3\xa9\r\n")
    assert read_icdar_gt(with_bom)[0].text == "caf\u00e9"
    assert read_icdar_result(tmp_path / "gt_img_1.txt")[0].text == "Hello, world"
    assert parse_icdar("1,2,3,4,5,6,7,8\n", need_text=False)[0].text == ""
    with pytest.raises(ValueError, match=":1: expected 8 coordinates"):
        parse_icdar("1,2,3,4,5,6,7,8\n", source="x")
    with pytest.raises(ValueError, match=":2: coordinates are not numbers"):
        parse_icdar("1,2,3,4,5,6,7,8,a\n1,2,3,4,5,6,7,b,c\n", source="x")


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["spot", "synth", "--out", str(out), "--n", "2", "--seed", "1", "--size", "64", "128", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["size"] == [64, 128] and summary["n_images"] == 2
    image, words = load_sample(out, "img_2")
    assert image.shape == (64, 128) and all(isinstance(w, SynthWord) for w in words)
    assert main(["spot", "synth", "--out", str(out), "--n", "0", "--seed", "1"]) == 2
    assert "argument --n: 0 must be at least 1" in capsys.readouterr().err
