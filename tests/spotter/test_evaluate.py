"""ICDAR 2015 scoring on hand-made cases, recognition metrics, and `refq spot eval` end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.cli import main
from refq.spotter.boxes import aabb_to_quad
from refq.spotter.evaluate import (Counts, detection_counts, end_to_end_counts, evaluate_folder,
                                   load_predictions, match_words, recognition_metrics, transcription_match)
from refq.spotter.icdar import write_icdar

# five words on a grid, and a do-not-care region
GT = np.array([[10, 10, 60, 30], [80, 10, 140, 30], [10, 50, 50, 70], [80, 50, 150, 75], [10, 100, 90, 120],
               [150, 100, 200, 120]], dtype=float)
TEXTS = ["Hello", "WORLD!", "$12.50", "(exit)", "A7-42", "###"]
N_CARE = 5


def det_scores(gt, texts, det):
    return detection_counts(gt, texts, det).scores()


def test_perfect_detections_give_one():
    s = det_scores(GT, TEXTS, GT[:N_CARE])
    assert (s["precision"], s["recall"], s["hmean"]) == (1.0, 1.0, 1.0)
    e = end_to_end_counts(GT, TEXTS, GT[:N_CARE], TEXTS[:N_CARE]).scores()
    assert (e["precision"], e["recall"], e["hmean"]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("drop", range(N_CARE))
def test_dropping_one_detection_lowers_recall_by_one_over_care(drop):
    full = det_scores(GT, TEXTS, GT[:N_CARE])
    keep = [i for i in range(N_CARE) if i != drop]
    s = det_scores(GT, TEXTS, GT[keep])
    assert s["recall"] == pytest.approx(full["recall"] - 1 / N_CARE)
    assert s["precision"] == 1.0


@st.composite
def scenes(draw):
    """Non-overlapping GT boxes (one per cell of a 4x4 grid of 40 px cells), their dnc flags (>= 1 care word)."""
    cells = draw(st.lists(st.integers(0, 15), min_size=1, max_size=10, unique=True))
    boxes = []
    for c in cells:
        x, y = 40 * (c % 4), 40 * (c // 4)
        x0, y0 = draw(st.integers(0, 15)), draw(st.integers(0, 15))
        boxes.append([x + x0, y + y0, x + x0 + draw(st.integers(5, 24)), y + y0 + draw(st.integers(5, 24))])
    dnc = draw(st.lists(st.booleans(), min_size=len(cells), max_size=len(cells)))
    dnc[draw(st.integers(0, len(cells) - 1))] = False
    return np.array(boxes, dtype=float), ["###" if d else f"w{i}" for i, d in enumerate(dnc)]


@given(scenes(), st.data())
def test_recall_drops_by_one_over_care_per_missing_detection(scene, data):
    gt, texts = scene
    care = [i for i, t in enumerate(texts) if t != "###"]
    order = data.draw(st.permutations(care))  # detections in any order
    n_drop = data.draw(st.integers(0, len(care) - 1))
    kept = list(order[n_drop:])
    s = det_scores(gt, texts, gt[kept])
    assert s["recall"] == pytest.approx((len(care) - n_drop) / len(care))
    assert s["precision"] == 1.0
    e = end_to_end_counts(gt, texts, gt[kept], [texts[i].upper() for i in kept]).scores()
    assert e == s


def test_detection_on_dont_care_region_leaves_precision_unchanged():
    base = det_scores(GT, TEXTS, GT[:3])
    on_dnc = np.vstack([GT[:3], GT[5:6], [[160, 105, 190, 118]]])  # the ### box itself and a box inside it
    s = det_scores(GT, TEXTS, on_dnc)
    assert s == base
    assert s["n_det_care"] == 3
    m = match_words(GT, TEXTS, on_dnc)
    np.testing.assert_array_equal(m.det_dnc, [False, False, False, True, True])


def test_detection_half_on_dont_care_region_counts_as_false():
    half = np.array([[125, 100, 175, 120]])  # |d n dnc| / |d| = 0.5 exactly: not > 0.5, so it stays a care detection
    s = det_scores(GT, TEXTS, np.vstack([GT[:N_CARE], half]))
    assert s["n_det_care"] == N_CARE + 1 and s["precision"] == pytest.approx(N_CARE / (N_CARE + 1))


def test_split_detection_gets_no_credit():
    x0, y0, x1, y1 = GT[0]
    mid = (x0 + x1) / 2
    halves = np.array([[x0, y0, mid, y1], [mid, y0, x1, y1]])
    s = det_scores(GT, TEXTS, np.vstack([halves, GT[1:N_CARE]]))
    assert s["matched"] == N_CARE - 1  # each half has IoU 0.5, and the rule is IoU > 0.5
    assert s["recall"] == pytest.approx((N_CARE - 1) / N_CARE)
    assert s["precision"] == pytest.approx((N_CARE - 1) / (N_CARE + 1))


def test_iou_must_exceed_half_and_matching_is_one_to_one():
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    exactly_half = np.array([[0, 0, 10, 5]], dtype=float)  # IoU 0.5
    assert det_scores(gt, ["word"], exactly_half)["matched"] == 0
    twice = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5]])
    s = det_scores(gt, ["word"], twice)
    assert (s["matched"], s["precision"], s["recall"]) == (1, 0.5, 1.0)


def test_quads_and_boxes_score_alike():
    quads = aabb_to_quad(GT[:N_CARE])
    assert detection_counts(GT, TEXTS, quads) == detection_counts(GT, TEXTS, GT[:N_CARE])
    tilted = quads.copy()
    tilted[0, 1, 1] += 2.0  # a slightly rotated top edge: the polygon path
    assert detection_counts(GT, TEXTS, tilted).matched == N_CARE


def test_end_to_end_ignores_case():
    dets = ["hello", "world!", "$12.50", "(EXIT)", "a7-42"]
    assert end_to_end_counts(GT, TEXTS, GT[:N_CARE], dets).matched == N_CARE


def test_end_to_end_punctuation_rule():
    assert transcription_match("HELLO!", "hello")
    assert not transcription_match("HE!LO", "HELO")
    assert transcription_match("(exit)", "EXIT") and transcription_match("(exit)", "exit)")
    assert not transcription_match("HELLO", "hello!")  # only GT punctuation may be dropped
    assert not transcription_match("!!HELLO", "hello")  # at most one character per end
    assert transcription_match("$12.50", "$12.50") and not transcription_match("$12.50", "12.50")  # '$' is not special


def test_end_to_end_misread_consumes_the_match():
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    c = end_to_end_counts(gt, ["word"], dets, ["ward", "word"])
    assert (c.matched, c.n_gt, c.n_det) == (0, 1, 2)  # the first (misread) detection took the GT word


def test_counts_are_summed_over_images_not_averaged():
    a = detection_counts(GT, TEXTS, GT[:1])  # 1 of 5
    b = detection_counts(GT[:1], TEXTS[:1], GT[:1])  # 1 of 1
    total = (a + b).scores()
    assert total["recall"] == pytest.approx(2 / 6)
    assert Counts(0, 0, 0).scores()["hmean"] == 0.0


def test_per_sample_conventions():
    assert Counts(0, 0, 2).sample_scores()["recall"] == 1.0 and Counts(0, 0, 2).sample_scores()["precision"] == 0.0
    assert Counts(0, 0, 0).sample_scores()["precision"] == 1.0
    assert Counts(1, 2, 0).sample_scores()["precision"] == 0.0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="3 transcriptions"):
        end_to_end_counts(GT, TEXTS, GT[:N_CARE], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"boxes \[N, 4\] or quads"):
        detection_counts(GT, TEXTS, np.zeros((2, 5)))


def test_recognition_metrics_hand_case():
    m = recognition_metrics(["hello", "W0rld", "exit!", ""], ["Hello", "world", "(EXIT)", "ab"])
    # after 'alnum' normalisation: hello/hello, w0rld/world (1 sub), exit/exit, ''/ab (2 ins)
    assert m["word_accuracy"] == pytest.approx(2 / 4)
    assert m["cer"] == pytest.approx(3 / (5 + 5 + 4 + 2))
    assert m["one_minus_ned"] == pytest.approx(1 - (0 + 1 / 5 + 0 + 1) / 4)
    exact = recognition_metrics(["hello"], ["Hello"], mode="exact")
    assert exact["word_accuracy"] == 0.0 and exact["cer"] == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="empty after normalize_word"):
        recognition_metrics(["a"], ["!!"])


def _write_gt_folder(tmp_path):
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    write_icdar(gt_dir / "gt_img_1.txt", aabb_to_quad(GT), TEXTS)
    write_icdar(gt_dir / "gt_img_2.txt", aabb_to_quad(GT[:2]), ["one, two", "three"])
    return gt_dir


def test_evaluate_folder_from_json_and_result_files(tmp_path):
    gt_dir = _write_gt_folder(tmp_path)
    preds = {"img_1.png": [{"box": b.tolist(), "text": t, "det_score": 0.9} for b, t in zip(GT[:N_CARE], TEXTS)],
             "img_2": [{"poly": aabb_to_quad(GT[:1])[0].tolist(), "text": "ONE, TWO"}]}
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    r = evaluate_folder(gt_dir, load_predictions(tmp_path / "pred.json"))
    assert r["n_images"] == 2 and r["detection"]["matched"] == 6 and r["detection"]["n_gt_care"] == 7
    assert r["end_to_end"]["matched"] == 6 and r["detection"]["precision"] == 1.0
    res_dir = tmp_path / "res"
    res_dir.mkdir()
    write_icdar(res_dir / "res_img_1.txt", aabb_to_quad(GT[:2]), None, bom=False, crlf=False)  # detection only
    r = evaluate_folder(gt_dir, load_predictions(res_dir))
    assert r["detection"]["matched"] == 2 and r["end_to_end"] is None
    assert [p["image"] for p in r["per_image"]] == ["img_1", "img_2"]
    assert r["per_image"][1]["detection"]["recall"] == 0.0
    with pytest.raises(ValueError, match="img_9"):
        evaluate_folder(gt_dir, {"img_9": []})


def test_cli_eval(tmp_path, capsys):
    gt_dir = _write_gt_folder(tmp_path)
    items = [{"image": "data/img_1.png", "words": [{"box": b.tolist(), "text": t} for b, t in zip(GT, TEXTS)]}]
    (tmp_path / "pred.json").write_text(json.dumps(items))
    assert main(["spot", "eval", "--data", str(gt_dir), "--pred", str(tmp_path / "pred.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["detection"]["precision"] == 1.0 and out["detection"]["recall"] == pytest.approx(5 / 7)
    assert main(["spot", "eval", "--data", str(gt_dir), "--pred", str(tmp_path / "pred.json")]) == 0
    assert "end-to-end" in capsys.readouterr().out
    assert main(["spot", "eval", "--data", str(gt_dir), "--pred", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_overlay_colours_follow_the_end_to_end_match(tmp_path):
    from PIL import Image

    from refq.spotter.overlay import GREEN, GREY, ORANGE, RED, draw_overlay

    image = np.full((130, 210), 128, dtype=np.uint8)
    gt = [(tuple(b), t, t == "###") for b, t in zip(GT.astype(int), TEXTS)]
    preds = [{"box": GT[0].tolist(), "text": "hello", "det_score": 0.9},  # correct: green
             {"box": GT[1].tolist(), "text": "word"},  # misread: red
             {"box": GT[5].tolist(), "text": "x"}]  # on the ### region: grey; GT 2-4 missed: orange
    out = draw_overlay(image, preds, tmp_path / "o.png", gt=gt)
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (260, 420, 3)
    present = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert {GREEN, RED, GREY, ORANGE} <= present
    with pytest.raises(ValueError, match="float64"):
        draw_overlay(image.astype(float), preds, tmp_path / "bad.png")


def test_end_to_end_errors_lists_each_kind_of_failure():
    from refq.spotter.infer import end_to_end_errors
    from refq.spotter.synth import SynthWord

    words = [[SynthWord((0, 0, 40, 10), "Hello", False), SynthWord((50, 0, 90, 10), "world", False),
              SynthWord((0, 20, 40, 30), "###", True), SynthWord((0, 40, 40, 50), "gone", False)]]
    spotted = [[{"box": [0, 0, 40, 10], "text": "HELLO", "score": 0.9},  # right, case aside
                {"box": [52, 0, 90, 10], "text": "wor1d", "score": 0.8},  # matched, misread
                {"box": [1, 20, 40, 30], "text": "xx", "score": 0.7},  # on a do-not-care word: not counted
                {"box": [100, 40, 140, 50], "text": "ghost", "score": 0.6}]]  # matches nothing
    e = end_to_end_errors(words, spotted, ["img_1"])
    assert e["misread"] == [{"image": "img_1", "gt": "world", "text": "wor1d", "iou": 0.95}]
    assert e["missed"] == [{"image": "img_1", "gt": "gone", "best_iou": 0.0}]
    assert [(f["text"], f["best_iou"]) for f in e["false"]] == [("ghost", 0.0)]
