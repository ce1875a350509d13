"""`refq spot ...`: the joint text spotter's command line.

  refq spot run IMAGE... [--json] [--overlay OUT.png] [--lexicon FILE] [--decoder greedy|beam|lexicon]
                         [--checkpoint PATH] [--int8]
      Spot words with the shipped model (refq/weights/spotter.npz): one line per word
      (image, box x0,y0,x1,y1, text, confidence), or with --json the list
      [{"box": [x0, y0, x1, y1], "text": ..., "score": ..., "det_score": ..., "rec_score": ...}]
      (several images: [{"image": ..., "words": [...]}], which `refq spot eval --pred` reads).
      --overlay draws the boxes and texts on the image (OUT_<name>.png for several images).
  refq spot eval --data DIR [--pred DIR_OR_JSON] [--checkpoint PATH] [--int8] [--limit N] [--json]
      ICDAR 2015 scores on a dataset folder (gt_img_{i}.txt): detection P/R/F (IoU > 0.5,
      '###' = do not care) and end-to-end P/R/F (case-insensitive). Without --pred the shipped
      model runs on the images; then also the recognizer's word accuracy and CER on the
      ground-truth boxes, and images per second.
  refq spot train --data DIR --out PATH [--val DIR] [--steps N] [--seed S] [--det-only | --rec-only]
                  [--recognizer fcr|lstm] [--log FILE] ...
      Seeded training on a folder made by `refq spot synth`; progress to stderr (and --log).
  refq spot table --data DIR --joint CKPT --det CKPT --rec CKPT [--lstm CKPT] [--json] [--md FILE]
      The ablation: joint vs separate detection/recognition models, FCR vs BiLSTM, float vs int8.
  refq spot synth --out DIR --n N --seed S [--fonts train|heldout] [--size 256] [--rgb] [--style P]
      Render a seeded synthetic dataset in the ICDAR 2015 layout (img_{i}.png, gt_img_{i}.txt).

Predictions for `eval --pred` are a folder of ICDAR result files res_img_{i}.txt, or a JSON
file {"img_1": [{"box": [x0, y0, x1, y1], "text": "..."}, ...], ...} (or "poly" instead of
"box"), or a list [{"image": "img_1.png", "words": [...]}, ...].
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from refq.commands._args import (finite_float, float_in, input_dir, input_file, int_in, output_file, positive_int,
                                 same_file)
from refq.data.image import MAX_PIXELS

MAX_SIDE = 8192  # `spot synth --size`: pixels per side


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register_synth(sub) -> None:
    p = sub.add_parser("synth", help="render a seeded synthetic dataset (ICDAR 2015 layout)",
                       description="Render a seeded synthetic scene-text dataset in the ICDAR 2015 layout.")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--n", type=positive_int, required=True, help="number of images")
    p.add_argument("--seed", type=int, required=True, help="dataset seed (image i uses the generator [seed, split, i])")
    p.add_argument("--fonts", choices=("train", "heldout"), default="train",
                   help="font list: training fonts, or the disjoint held-out fonts for the test set")
    p.add_argument("--size", type=int_in(16, MAX_SIDE), nargs="+", default=[256], metavar="PX",
                   help=f"image size: one value (square) or H W, each 16..{MAX_SIDE} (default 256)")
    p.add_argument("--rgb", action="store_true", help="RGB images instead of grayscale")
    p.add_argument("--style", type=float_in(0.0, 1.0), default=0.0, metavar="P",
                   help="fraction of the lines drawn with synthetic bold and/or slant (default 0: plain faces only; "
                        "datasets made with 0 are unchanged by this option)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_synth)


def _synth(args) -> int:
    from refq.spotter.synth import generate_dataset

    if len(args.size) not in (1, 2):
        raise ValueError(f"--size takes one or two values, got {args.size}")
    size = (args.size[0], args.size[-1])
    _log(f"synth: {args.n} images of {size[0]}x{size[1]}, {args.fonts} fonts, style {args.style}, "
         f"seed {args.seed} -> {args.out}")
    summary = generate_dataset(args.out, args.n, args.seed, fonts=args.fonts, size=size,
                               mode="RGB" if args.rgb else "L", style=args.style, verbose=True)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['n_images']} images with {summary['n_words']} words "
              f"({summary['n_dnc']} do-not-care) to {args.out}")
        print(f"fonts ({args.fonts}): {', '.join(summary['font_files'])}")
    return 0


def register_run(sub) -> None:
    p = sub.add_parser("run", help="spot words (box, text, confidence) in images with the shipped model",
                       description="Spot words (box, text, confidence) in images.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (converted to grayscale)")
    p.add_argument("--json", action="store_true", help="print JSON records instead of one line per word")
    p.add_argument("--overlay", default=None, metavar="OUT.png", type=output_file,
                   help="draw the spotted words on the image (never onto an input image)")
    p.add_argument("--lexicon", default=None, metavar="FILE", type=input_file,
                   help="word list (one per line): lexicon decoding")
    p.add_argument("--decoder", choices=("greedy", "beam", "lexicon"), default=None,
                   help="CTC decoder (default greedy, or lexicon when --lexicon is given)")
    p.add_argument("--checkpoint", default=None, type=input_file,
                   help="spotter .npz (default: refq/weights/spotter.npz)")
    p.add_argument("--int8", action="store_true", help="run the int8 model (Numba integer GEMMs)")
    _add_decoding_options(p)
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse images of more than N pixels, read from the header before decoding "
                        f"(default {MAX_PIXELS:,} = 4096x4096)")
    p.set_defaults(func=_run)


def _add_decoding_options(p) -> None:
    """Detection decoding options shared by `refq spot run` and `refq spot eval` (defaults: refq.spotter.decode)."""
    p.add_argument("--score-thresh", type=float_in(0.0, 1.0), default=0.8,
                   help="score-map threshold in [0, 1] (default 0.8)")
    p.add_argument("--nms-iou", type=float_in(0.0, 1.0), default=0.2, help="locality-aware NMS IoU (default 0.2)")
    p.add_argument("--merge-gap", type=finite_float, default=-0.5,
                   help="join boxes on one line whose horizontal gap is at most this x their height (negative: "
                        "they must overlap by that much; default -0.5, chosen on validation images)")
    p.add_argument("--no-merge", action="store_true", help="do not join overlapping boxes on a line")


def _decoding_kw(args) -> dict:
    return {"score_thresh": args.score_thresh, "nms_iou": args.nms_iou,
            "merge_gap": None if args.no_merge else args.merge_gap}


def _read_lexicon(path) -> list[str]:
    words = [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines() if w.strip()]
    if not words:
        raise ValueError(f"lexicon {path} holds no words")
    return words


def _load_model(checkpoint, int8: bool):
    """(params, config, ops) of the model: the float conv hook, or the int8 one (refq.spotter.quantized)."""
    from refq.models.ops import FLOAT_OPS
    from refq.spotter.infer import load_spotter

    params, cfg, _ = load_spotter(checkpoint)
    if int8:
        from refq.spotter.quantized import quantize_spotter

        return params, cfg, quantize_spotter(params, cfg)
    return params, cfg, FLOAT_OPS


def _run(args) -> int:
    from refq.data.image import read_image
    from refq.spotter.infer import spot_images
    from refq.spotter.overlay import draw_overlay

    decoder = args.decoder or ("lexicon" if args.lexicon else "greedy")
    lexicon = _read_lexicon(args.lexicon) if args.lexicon else None
    if decoder == "lexicon" and lexicon is None:
        raise ValueError("--decoder lexicon needs --lexicon FILE")
    paths = [Path(p) for p in args.images]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"image {path} not found")
    targets = _overlay_targets(Path(args.overlay), paths) if args.overlay else []
    images = [read_image(path, "L", args.max_pixels, hint=" (raise it with --max-pixels)") for path in paths]
    params, cfg, ops = _load_model(args.checkpoint, args.int8)
    results = spot_images(params, cfg, images, decoder=decoder, lexicon=lexicon, ops=ops, **_decoding_kw(args))
    for target, image, words in zip(targets, images, results):
        draw_overlay(image, words, target)
        _log(f"overlay: {target}")
    if args.json:
        payload = results[0] if len(paths) == 1 else [{"image": p.name, "words": w} for p, w in zip(paths, results)]
        print(json.dumps(payload, indent=2))
        return 0
    for path, words in zip(paths, results):
        for w in words:
            box = ",".join(f"{v:.0f}" for v in w["box"])
            print(f"{path.name}\t{box}\t{w['text']}\t{w['score']:.3f}")
    return 0


def _overlay_targets(out: Path, paths: list[Path]) -> list[Path]:
    """The overlay file of each image (OUT, or OUT_<name> for several); ValueError if one would overwrite an input."""
    targets = [out] if len(paths) == 1 else [out.with_name(f"{out.stem}_{p.stem}{out.suffix or '.png'}") for p in paths]
    for target in targets:
        for path in paths:
            if same_file(path, target):
                raise ValueError(f"--overlay {target} is the input image {path}; refusing to overwrite it")
    return targets


def register_eval(sub) -> None:
    p = sub.add_parser("eval", help="ICDAR 2015 detection and end-to-end P/R/F on a dataset folder",
                       description="ICDAR 2015 detection and end-to-end P/R/F on a dataset folder.")
    p.add_argument("--data", required=True, type=input_dir,
                   help="folder with gt_img_{i}.txt ground truth (and img_{i}.png)")
    p.add_argument("--pred", default=None,
                   help="folder of res_img_{i}.txt result files, or a JSON file of predictions "
                        "(default: run the spotter on the images)")
    p.add_argument("--checkpoint", default=None, type=input_file,
                   help="spotter .npz (default: refq/weights/spotter.npz)")
    p.add_argument("--int8", action="store_true", help="evaluate the int8 model (Numba integer GEMMs)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N images only")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--errors", action="store_true",
                   help="also list the end-to-end failures: misread words, missed words, false detections "
                        "(when the spotter runs, not with --pred)")
    _add_decoding_options(p)
    p.set_defaults(func=_eval)


def _format_scores(title: str, s: dict) -> str:
    return (f"{title:<12} P {s['precision']:.4f}  R {s['recall']:.4f}  F {s['hmean']:.4f}   "
            f"(matched {s['matched']}, GT care {s['n_gt_care']}, det care {s['n_det_care']})")


def _eval(args) -> int:
    if args.pred is not None:
        from refq.spotter.evaluate import evaluate_folder, load_predictions

        result = evaluate_folder(args.data, load_predictions(args.pred))
    else:
        from refq.spotter.infer import evaluate_dataset

        params, cfg, ops = _load_model(args.checkpoint, args.int8)
        _log(f"eval: {'int8' if args.int8 else 'float'} {cfg.tasks} model on {args.data}")
        result = evaluate_dataset(params, cfg, args.data, limit=args.limit, verbose=True, errors=args.errors,
                                  ops=ops, **_decoding_kw(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"images: {result['n_images']}  (ICDAR 2015 protocol: IoU > 0.5, '###' = do not care)")
    if result.get("detection"):
        print(_format_scores("detection", result["detection"]))
    if result.get("end_to_end") is None:
        print("end-to-end   (skipped: no transcriptions)")
    else:
        print(_format_scores("end-to-end", result["end_to_end"]))
    if result.get("recognition"):
        r = result["recognition"]
        print(f"recognizer on GT boxes: word accuracy {r['word_accuracy']:.4f}  CER {r['cer']:.4f}  "
              f"1-NED {r['one_minus_ned']:.4f}  ({r['n_words']} words)")
    if "images_per_second" in result:
        print(f"speed: {result['images_per_second']:.1f} images/s")
    if "errors" in result:
        e = result["errors"]
        print(f"end-to-end failures: {len(e['misread'])} misread, {len(e['missed'])} missed, "
              f"{len(e['false'])} false detections")
        for r in e["misread"]:
            print(f"  misread  {r['image']}: {r['gt']!r} read as {r['text']!r} (IoU {r['iou']:.2f})")
        for r in e["missed"]:
            print(f"  missed   {r['image']}: {r['gt']!r} (best IoU {r['best_iou']:.2f})")
        for r in e["false"]:
            print(f"  false    {r['image']}: {r['text']!r} (score {r['score']:.2f}, best IoU {r['best_iou']:.2f})")
    return 0


def register_train(sub) -> None:
    import dataclasses

    from refq.spotter.train_config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="seeded training of the spotter (joint or separate models)",
                       description="Seeded training of the joint text spotter.")
    p.add_argument("--data", required=True, type=input_dir, help="training folder made by `refq spot synth`")
    p.add_argument("--val", default=None, type=input_dir, help="validation folder (scored every --eval-every steps)")
    p.add_argument("--out", required=True, type=output_file, help="output .npz (rewritten at every evaluation)")
    p.add_argument("--log", default=None, type=output_file, help="also append the progress lines to this file")
    p.add_argument("--seed", type=int, default=0)
    task = p.add_mutually_exclusive_group()
    task.add_argument("--det-only", action="store_true", help="backbone + detection head only (ablation)")
    task.add_argument("--rec-only", action="store_true", help="backbone + recognizer on GT boxes only (ablation)")
    p.add_argument("--recognizer", choices=("fcr", "lstm"), default="fcr",
                   help="fully convolutional recognizer (default) or a BiLSTM head (ablation)")
    p.add_argument("--rec-pad", type=float_in(0.0, float("inf")), default=0.0,
                   help="recognition reads every box widened by this x its height on both sides (default 0)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N training images")
    p.add_argument("--init", default=None, type=input_file,
                   help="start from the params of this checkpoint (same architecture)")
    for f in dataclasses.fields(TrainConfig):  # every training hyper-parameter, with its default
        default = getattr(d, f.name)
        p.add_argument("--" + f.name.replace("_", "-"), type=_train_option_type(f.name, default), default=default,
                       help=f"(default {default})")
    p.set_defaults(func=_train)


def _train_option_type(name: str, default):
    """argparse type of a TrainConfig field: counts >= 1 (>= 0 for warm-up and crops), floats finite and >= 0."""
    if isinstance(default, float):
        return float_in(0.0, 1.0) if name == "pred_from" else float_in(0.0, float("inf"))
    assert isinstance(default, int), name
    return int_in(0, 1 << 31) if name in ("warmup", "crop_words", "crop_margin") else positive_int


def _train(args) -> int:
    import dataclasses
    import time

    import numpy as np

    from refq.spotter import model as M
    from refq.spotter.infer import load_arrays, load_spotter
    from refq.spotter.train import TrainConfig, save_checkpoint, train

    log_file = open(args.log, "a", encoding="utf-8") if args.log else None

    def log(msg: str) -> None:
        _log(msg)
        if log_file:
            log_file.write(msg + "\n")
            log_file.flush()

    command = "refq " + " ".join(shlex.quote(str(a)) for a in args.argv_all)
    tasks = "det" if args.det_only else "rec" if args.rec_only else "joint"
    cfg = M.SpotterConfig(tasks=tasks, recognizer=args.recognizer, rec_pad=args.rec_pad)
    tcfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    log(f"{command}\nconfig {cfg.to_dict()}\ntrain {dataclasses.asdict(tcfg)}")
    t0 = time.time()
    _, images, words = load_arrays(args.data, args.limit)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"training images must share one size, found {sorted(shapes)[:3]}")
    images = np.stack(images)  # [N, H, W]
    val = load_arrays(args.val)[1:] if args.val else None
    log(f"data: {len(images)} training images ({sum(len(w) for w in words)} words)"
        f"{f', {len(val[0])} validation images' if val else ''} loaded in {time.time() - t0:.0f} s")
    init, init_manifest = None, None
    if args.init:
        init, init_cfg, init_manifest = load_spotter(args.init)
        if M.expected_shapes(init_cfg) != M.expected_shapes(cfg):
            raise ValueError(f"--init {args.init} has config {init_cfg}, whose parameters do not fit {cfg}")

    def save(params, history, step):
        save_checkpoint(args.out, params, cfg, tcfg, history, step, command, args.seed, str(args.data), init_manifest)
        log(f"saved {args.out} at step {step}")

    rng = np.random.default_rng(args.seed)
    log(f"parameters: {M.param_count(M.init_params(cfg, np.random.default_rng(0)))}, seed {args.seed}")
    _, history = train(cfg, tcfg, images, words, rng, val=val, save=save, log=log, init=init)
    if log_file:
        log_file.close()
    print(json.dumps(history[-1] if history else {}, indent=2))
    return 0


def register_table(sub) -> None:
    p = sub.add_parser("table", help="the ablation table: joint vs separate models, FCR vs BiLSTM, float vs int8",
                       description="Ablation: joint vs separate models, FCR vs BiLSTM, float vs int8.")
    p.add_argument("--data", required=True, type=input_dir, help="held-out test folder")
    p.add_argument("--joint", default=None, type=input_file, help="joint model (default: the shipped one)")
    p.add_argument("--det", default=None, type=input_file, help="detection-only model (--det-only)")
    p.add_argument("--rec", default=None, type=input_file, help="recognition-only FCR model (--rec-only)")
    p.add_argument("--lstm", default=None, type=input_file,
                   help="recognition-only BiLSTM model (--rec-only --recognizer lstm)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 row")
    p.add_argument("--limit", type=positive_int, default=None, help="first N test images only")
    p.add_argument("--md", default=None, type=output_file, help="also write the markdown table to this file")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.set_defaults(func=_table)


def _table(args) -> int:
    from refq.spotter.table import ablation, to_markdown

    result = ablation(args.data, joint=args.joint, det=args.det, rec=args.rec, lstm=args.lstm,
                      int8=not args.no_int8, limit=args.limit, log=_log)
    md = to_markdown(result)
    if args.md:
        Path(args.md).write_text(md + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2) if args.json else md)
    return 0


SUBCOMMANDS = (register_run, register_eval, register_train, register_table, register_synth)


def register(subparsers) -> None:
    p = subparsers.add_parser("spot", help="joint text spotter: spot words in images, train, evaluate, synth data",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="spot_command", metavar="SPOT_COMMAND")
    for register_subcommand in SUBCOMMANDS:
        register_subcommand(sub)
    p.set_defaults(func=lambda args: p.print_help() or 0)
