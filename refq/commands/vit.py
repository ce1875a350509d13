"""`refq vit ...`: the small Fashion-MNIST ViT (train, average, eval), SARDFQ data-free quantization (dfq)
and its table (table)."""
from __future__ import annotations

import json
import sys

from refq.commands._args import (float_in, input_dir, input_file, nonnegative_int, output_file, positive_float,
                                 positive_int)

INF = float("inf")


def register(subparsers) -> None:
    p = subparsers.add_parser("vit", help="train/evaluate the shipped ViT; data-free quantization (SARDFQ)",
                              description="The Vision Transformer used by the SARDFQ experiments.")
    sub = p.add_subparsers(dest="vit_command", metavar="VIT_COMMAND")

    t = sub.add_parser("train", help="train the Fashion-MNIST ViT (or its convnet teacher), seeded",
                       description="Train the small ViT on Fashion-MNIST with the hand-written autograd and save "
                                   "it as an .npz with a manifest (config, command, seed, accuracy, history). "
                                   "--arch cnn trains the convnet teacher instead; --teacher distils one into the "
                                   "ViT. The state after each epoch is kept in OUT.state.npz for --resume.")
    t.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files "
                                                "(default: /usr/share/datasets/fashion-mnist)")
    t.add_argument("--out", required=True, type=output_file, help="output .npz path")
    t.add_argument("--epochs", type=positive_int, default=15)
    t.add_argument("--batch-size", type=positive_int, default=128)
    t.add_argument("--lr", type=positive_float, default=1e-3)
    t.add_argument("--weight-decay", type=float_in(0.0, INF), default=0.05)
    t.add_argument("--embed-dim", type=positive_int, default=96)
    t.add_argument("--depth", type=positive_int, default=6)
    t.add_argument("--heads", type=positive_int, default=3)
    t.add_argument("--patch", type=positive_int, default=4)
    t.add_argument("--limit", type=positive_int, default=None,
                   help="use only the first N training images (smoke tests)")
    t.add_argument("--val-size", type=nonnegative_int, default=0,
                   help="hold out N training images (a fixed split, the same for every seed) and monitor top-1 on "
                        "them each epoch; the test set is then evaluated only at the end (default 0: monitor on "
                        "the first 2,000 test images, as the shipped ViT was trained)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--augment", choices=("crop-flip", "flip", "none"), default="crop-flip",
                   help="training augmentation: random 2-px shift + horizontal flip (default), flip only, none")
    t.add_argument("--warmup-epochs", type=float_in(0.0, INF), default=1.0,
                   help="linear warm-up before the cosine decay")
    t.add_argument("--init", default=None, type=input_file, help="start from this refq checkpoint (same architecture) "
                                               "instead of a random initialisation")
    t.add_argument("--ema", type=float_in(0.0, 1.0), default=0.0,
                   help="keep an exponential moving average of the weights with this decay per step (e.g. "
                        "0.999) and evaluate and save the average instead of the last iterate (default 0: off)")
    t.add_argument("--arch", choices=("vit", "cnn"), default="vit",
                   help="vit (default) or cnn: the small convnet used as a distillation teacher (refq.models.cnn)")
    t.add_argument("--channels", type=positive_int, nargs="+", default=[32, 64, 128],
                   help="--arch cnn: width of each 3x3 conv stage (default: 32 64 128)")
    t.add_argument("--teacher", default=None, type=input_file,
                   help="distil from this refq checkpoint (a --arch cnn or ViT model; DeiT Sec. 4, through the "
                        "class token)")
    t.add_argument("--distill", choices=("hard", "soft"), default="hard",
                   help="with --teacher: hard-label (DeiT Eq. 3, default) or soft (Eq. 2) distillation")
    t.add_argument("--distill-weight", type=float_in(0.0, 1.0), default=0.5,
                   help="--distill soft: weight of the KL term")
    t.add_argument("--distill-tau", type=positive_float, default=1.0, help="--distill soft: temperature")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from OUT's .state.npz (written after every epoch, removed at "
                        "the end); give the same arguments as the interrupted command")
    t.set_defaults(func=_train)

    a = sub.add_parser("average", help="average the weights of several ViT checkpoints (a uniform model soup)",
                       description="Average the weights of refq ViT checkpoints of one architecture, element by "
                                   "element with equal weights (the uniform soup of Wortsman et al. 2022), evaluate "
                                   "the average on the Fashion-MNIST test set and save it with a manifest that "
                                   "records each ingredient's command chain. Meant for fine-tunes of one ancestor.")
    a.add_argument("checkpoints", nargs="+", type=input_file, help="refq ViT .npz checkpoints (at least two)")
    a.add_argument("--out", required=True, type=output_file, help="output .npz path")
    a.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    a.set_defaults(func=_average)

    e = sub.add_parser("eval", help="top-1 of a ViT checkpoint on the Fashion-MNIST test set",
                       description="Evaluate a refq ViT checkpoint (default: the shipped one).")
    e.add_argument("--checkpoint", default=None, type=input_file,
                   help="refq .npz checkpoint (default: the shipped ViT)")
    e.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    e.add_argument("--limit", type=positive_int, default=None, help="evaluate on the first N test images only")
    e.add_argument("--json", action="store_true", help="print a JSON record")
    e.set_defaults(func=_eval)

    d = sub.add_parser("dfq", help="SARDFQ data-free quantization: calibrate, quantize, reconstruct, print top-1",
                       description="Quantize a ViT (weights per-channel, activations per-tensor, log2 attention) "
                                   "with calibration images from real data, Gaussian noise, PSAQ-ViT or SARDFQ "
                                   "synthesis, reconstruct block by block, and print top-1. Default model and "
                                   "data: the shipped Fashion-MNIST ViT and its test set; --checkpoint with "
                                   "--images evaluates a converted timm ViT/DeiT on a labelled image folder.")
    d.add_argument("--calib", choices=("noise", "psaq", "sardfq", "real"), default="sardfq")
    d.add_argument("--wbits", type=int, default=4)
    d.add_argument("--abits", type=int, default=4)
    d.add_argument("--no-apa", action="store_true", help="SARDFQ without Attention Priors Alignment")
    d.add_argument("--no-msr", action="store_true", help="SARDFQ without Multi-Semantic Reinforcement")
    d.add_argument("--no-sl", action="store_true", help="SARDFQ with one-hot instead of soft labels")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--alpha1", type=float_in(0.0, INF), default=None, help="APA weight (default: refq's tuned value)")
    d.add_argument("--batch", type=positive_int, default=32, help="calibration images (paper: 32)")
    d.add_argument("--iters", type=positive_int, default=None,
                   help="synthesis iterations per round (2 rounds; paper: 500)")
    d.add_argument("--recon-iters", type=nonnegative_int, default=100,
                   help="reconstruction steps per block (paper: 100)")
    d.add_argument("--chunk", type=nonnegative_int, default=0,
                   help="images per synthesis forward (0: all; saves memory)")
    d.add_argument("--integer", action="store_true", help="evaluate on the integer kernels instead of fake-quant")
    d.add_argument("--compare-integer", action="store_true",
                   help="evaluate both the integer kernels and the fake-quant simulation; report their agreement")
    d.add_argument("--checkpoint", default=None, type=input_file,
                   help="refq ViT .npz or a timm ViT/DeiT converted by `refq convert`")
    d.add_argument("--heads", type=positive_int, default=None,
                   help="attention heads of a converted checkpoint (default D/64)")
    d.add_argument("--images", default=None, type=input_dir,
                   help="evaluation image folder (DIR/<class>/<image>) for --checkpoint")
    d.add_argument("--labels", default=None, type=input_file,
                   help="class-order file for --images (one class folder per line), or "
                                                  "'filename class_index' lines for a flat folder")
    d.add_argument("--calib-images", default=None, type=input_dir,
                   help="folder of real calibration images (--calib real with --images)")
    d.add_argument("--data", default=None, help="Fashion-MNIST folder (default: /usr/share/datasets/fashion-mnist)")
    d.add_argument("--limit", type=positive_int, default=None, help="evaluate on N images only")
    d.add_argument("--save-images", default=None, type=output_file, help="write the calibration images as a PNG grid")
    d.add_argument("--json", action="store_true", help="print a JSON record")
    d.set_defaults(func=_dfq)
    register_table(sub)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def register_table(sub) -> None:
    """`refq vit table`: the SARDFQ table of docs/sardfq.md (see refq.sardfq.table)."""
    t = sub.add_parser("table", help="regenerate the SARDFQ table (W4A4/W6A6 calibrations, ablation, seeds)",
                       description="The SARDFQ table of docs/sardfq.md: FP32; W4A4 and W6A6 with real images, "
                                   "Gaussian noise, PSAQ-ViT and SARDFQ calibration; the W4A4 APA/MSR/SL ablation; "
                                   "top-1 mean +- std over --seeds. Markdown goes to stdout; progress to stderr. "
                                   "With --sweep-alpha, tunes alpha1 on held-out training images instead and "
                                   "prints one JSON record. See refq.sardfq.table.")
    t.add_argument("--checkpoint", default=None, type=input_file,
                   help="refq ViT .npz (default: the shipped Fashion-MNIST ViT)")
    t.add_argument("--data", default=None, help="Fashion-MNIST folder")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--iters", type=positive_int, default=None, help="synthesis iterations per round")
    t.add_argument("--alpha1", type=float_in(0.0, INF), default=None, help="APA weight (default: refq's tuned value)")
    t.add_argument("--recon-iters", type=nonnegative_int, default=100)
    t.add_argument("--limit", type=positive_int, default=None, help="evaluate on the first N test images")
    t.add_argument("--cache", default=None, help="directory for cached calibration images")
    t.add_argument("--out-md", default=None, type=output_file)
    t.add_argument("--out-json", default=None, type=output_file, help="every finished run is written here at once")
    t.add_argument("--resume", action="store_true", help="skip runs already in --out-json")
    t.add_argument("--records", nargs="+", default=[], metavar="JSON", type=input_file,
                   help="also take the finished runs of these --out-json files (e.g. parts run in parallel "
                        "with --subset), so that only the missing runs execute")
    t.add_argument("--subset", choices=("all", "main", "w4a4", "ablation", "ablation-extra"), default="all",
                   help="run only part of the grid (w4a4: the four W4A4 calibration rows; ablation-extra: the "
                        "seven ablation rows not in the main grid, to run beside --subset main)")
    t.add_argument("--sweep-alpha", type=float, nargs="+", default=None, help="tune alpha1 on held-out images")
    t.add_argument("--heldout", type=positive_int, default=2000, help="held-out training images for --sweep-alpha")
    t.set_defaults(func=_table)


def _synth_config(args):
    from refq.sardfq.synthesis import SynthConfig

    changes = {k: v for k, v in (("iters", args.iters), ("alpha1", args.alpha1)) if v is not None}
    return SynthConfig(**changes)


def _table(args) -> int:
    import time
    from dataclasses import asdict

    from refq.models.vit_train import accuracy
    from refq.sardfq import pipeline, table

    start = time.time()
    params, cfg, _ = pipeline.load_model(args.checkpoint)
    sc = _synth_config(args)
    if args.sweep_alpha:
        hx, hy = pipeline.fashion_mnist(cfg, "train", args.data, args.heldout, offset=60000 - args.heldout)
        result = table.sweep_alpha(params, cfg, args.sweep_alpha, args.seeds, sc, hx, hy, args.recon_iters)
        print(json.dumps({"sweep": result, "synth": asdict(sc)}))
        return 0
    eval_x, eval_y = pipeline.fashion_mnist(cfg, "test", args.data, args.limit)
    real_pool, _ = pipeline.fashion_mnist(cfg, "train", args.data)
    cache = table.ImageCache(params, cfg, sc, real_pool, args.cache)
    records, part_seconds = _finished_records(args, cache.model)
    records = table.run_all(params, cfg, eval_x, eval_y, cache, args.seeds, args.recon_iters, records,
                            _records_writer(args.out_json), table.subset(args.subset))
    fp_top1 = accuracy(params, cfg, eval_x, eval_y)
    meta = {"seeds": args.seeds, "n_eval": len(eval_y), "synth_iters": sc.rounds * sc.iters, "batch": sc.batch,
            "alpha1": sc.alpha1, "recon_iters": args.recon_iters, "seconds": time.time() - start,
            "part_seconds": part_seconds, "model": cache.model}
    md = table.to_markdown(records, fp_top1, meta)
    _write_table(args, md, {"records": records, "fp_top1": fp_top1, "meta": meta, "synth": asdict(sc)})
    print(md)
    return 0


def _finished_records(args, fingerprint: str) -> tuple[list, list]:
    """(records of --out-json with --resume plus those of --records, the seconds each --records part took)."""
    from pathlib import Path

    from refq.sardfq.table import check_records

    records, part_seconds = [], []
    if args.resume and args.out_json and Path(args.out_json).exists():
        records = check_records(json.loads(Path(args.out_json).read_text())["records"], fingerprint, args.out_json)
    for extra in args.records:
        known = {r["key"] for r in records}
        part = json.loads(Path(extra).read_text())
        records += [r for r in check_records(part["records"], fingerprint, extra) if r["key"] not in known]
        part_seconds.append(part.get("meta", {}).get("seconds", 0.0))
    return records, part_seconds


def _records_writer(out_json):
    """save(records) for run_all: rewrite --out-json after every run, or None without --out-json."""
    from pathlib import Path

    if not out_json:
        return None
    return lambda records: Path(out_json).write_text(json.dumps({"records": records}, indent=1))


def _write_table(args, md: str, document: dict) -> None:
    from pathlib import Path

    if args.out_md:
        Path(args.out_md).write_text(md)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(document, indent=1))


def _train(args) -> int:
    import numpy as np

    from refq.data import fashion_mnist as fm
    from refq.io.npz import load_npz, save_npz
    from refq.models.cnn import CNNConfig
    from refq.models.vit import ViTConfig, normalize_images
    from refq.models.vit_train import (check_held_out, check_resume, command_line, state_path, train,
                                       trained_manifest, val_split)

    if args.arch == "cnn":
        cfg = CNNConfig(img_size=28, in_chans=1, num_classes=10, channels=tuple(args.channels),
                        mean=(fm.MEAN,), std=(fm.STD,))
    else:
        cfg = ViTConfig(img_size=28, patch_size=args.patch, in_chans=1, num_classes=10, embed_dim=args.embed_dim,
                        depth=args.depth, num_heads=args.heads, mean=(fm.MEAN,), std=(fm.STD,))
    x_train, y_train = fm.load("train", args.data)
    x_test, y_test = fm.load("test", args.data)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_val = y_val = None
    if args.val_size:
        train_idx, val_idx = val_split(len(x_train), args.val_size)
        x_val, y_val = normalize_images(x_train[val_idx][:, None], cfg), y_train[val_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
    init, init_manifest = None, None
    if args.init:
        init, init_cfg, init_manifest = load_model(args.init)
        if init_cfg != cfg:
            raise ValueError(f"--init {args.init} has config {init_cfg.to_dict()}, not {cfg.to_dict()}")
        check_held_out("--init", args.init, init_manifest, args.val_size)
    teacher, teacher_manifest = None, None
    if args.teacher:
        t_params, t_cfg, teacher_manifest = load_model(args.teacher)
        if (t_cfg.img_size, t_cfg.in_chans, t_cfg.num_classes, t_cfg.mean, t_cfg.std) != \
                (cfg.img_size, cfg.in_chans, cfg.num_classes, cfg.mean, cfg.std):
            raise ValueError(f"--teacher {args.teacher}: input or classes differ from the student's "
                             f"({t_cfg.to_dict()} vs {cfg.to_dict()})")
        check_held_out("--teacher", args.teacher, teacher_manifest, args.val_size)
        teacher = (t_params, t_cfg)
    state, resume = state_path(args.out), None
    command = command_line(args.argv_all, drop="--resume")  # a resumed run records the command it continues
    if args.resume:
        resume = load_npz(state) if state.exists() else (None, None)
        check_resume(state, resume[1], command)

    def save_state(arrays: dict, meta: dict) -> None:
        save_npz(state, arrays, {**meta, "command": command})

    rng = np.random.default_rng(args.seed)
    print(f"training {dict(vit='ViT', cnn='CNN')[args.arch]} {cfg.to_dict()} on {len(x_train)} images"
          + (f" ({args.val_size} more held out for validation)" if args.val_size else "") + f", seed {args.seed}"
          + (f", from {args.init}" if args.init else "")
          + (f", distilling ({args.distill}) from {args.teacher}" if args.teacher else ""), file=sys.stderr)
    params, history = train(cfg, normalize_images(x_train[:, None], cfg), y_train,
                            normalize_images(x_test[:, None], cfg), y_test, rng,
                            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, init=init,
                            augmentation=args.augment, ema=args.ema, x_val=x_val, y_val=y_val, teacher=teacher,
                            distill=args.distill, distill_weight=args.distill_weight, distill_tau=args.distill_tau,
                            resume=resume, on_epoch=save_state)
    manifest = trained_manifest(cfg, command, args.seed, history, resumed=args.resume, val_size=args.val_size,
                                init=init_manifest, teacher=(args.teacher, teacher_manifest) if args.teacher else None)
    save_npz(args.out, params, manifest)
    state.unlink(missing_ok=True)
    print(json.dumps({"out": args.out, "test_top1": history[-1]["test_top1"],
                      **({"val_top1": history[-1]["val_top1"]} if args.val_size else {})}))
    return 0


def load_model(path: str) -> tuple[dict, object, dict]:
    """(params, config, manifest) of a refq ViT or CNN checkpoint (by the manifest's config 'arch')."""
    from refq.io.npz import load_npz, load_with_config
    from refq.models import cnn
    from refq.pretrained import load_vit

    _, manifest = load_npz(path)
    if manifest.get("config", {}).get("arch") == "cnn":
        return load_with_config(path, cnn.CNNConfig, cnn.check_params, "CNN")
    return load_vit(path)


def _test_top1(params: dict, cfg, data, limit: int | None = None) -> tuple[float, int]:
    """(top-1, number of images) of a ViT on the Fashion-MNIST test set (its first `limit` images)."""
    from refq.data import fashion_mnist as fm
    from refq.models.vit import normalize_images
    from refq.models.vit_train import accuracy

    x, y = fm.load("test", data)
    if limit:
        x, y = x[:limit], y[:limit]
    return accuracy(params, cfg, normalize_images(x[:, None], cfg), y), len(y)


def _average(args) -> int:
    from refq.io.npz import save_npz
    from refq.models.vit_train import average_weights, command_line, lineage
    from refq.pretrained import load_vit

    if len(args.checkpoints) < 2:
        raise ValueError(f"refq vit average needs at least two checkpoints, got {args.checkpoints}")
    loaded = [load_vit(path) for path in args.checkpoints]
    cfg = loaded[0][1]
    for path, (_, other, _) in zip(args.checkpoints[1:], loaded[1:]):
        if other != cfg:
            raise ValueError(f"{path} has config {other.to_dict()}, {args.checkpoints[0]} has {cfg.to_dict()}")
    params = average_weights([p for p, _, _ in loaded])
    print(f"averaged {len(loaded)} checkpoints; evaluating on the test set", file=sys.stderr)
    top1, _ = _test_top1(params, cfg, args.data)
    manifest = {"config": cfg.to_dict(), "command": command_line(args.argv_all), "test_top1": top1,
                "soup": [{"path": path, **lineage(m)} for path, (_, _, m) in zip(args.checkpoints, loaded)]}
    save_npz(args.out, params, manifest)
    print(json.dumps({"out": args.out, "test_top1": top1,
                      "ingredients_top1": [m.get("test_top1") for _, _, m in loaded]}))
    return 0


def _eval(args) -> int:
    from refq.pretrained import VIT_FMNIST

    params, cfg, _ = load_model(args.checkpoint or str(VIT_FMNIST))
    acc, n = _test_top1(params, cfg, args.data, args.limit)
    if args.json:
        print(json.dumps({"top1": acc, "n": n}))
    else:
        print(f"top-1 {100 * acc:.2f}% on {n} Fashion-MNIST test images")
    return 0


def _dfq(args) -> int:
    from dataclasses import replace

    from refq.sardfq import pipeline
    from refq.sardfq.synthesis import SynthConfig

    if args.calib != "sardfq" and (args.no_apa or args.no_msr or args.no_sl):
        raise ValueError(f"--no-apa/--no-msr/--no-sl only apply to --calib sardfq, got --calib {args.calib}")
    if args.images is None and (args.labels or args.calib_images):
        raise ValueError("--labels and --calib-images need --images")
    params, cfg, _ = pipeline.load_model(args.checkpoint, heads=args.heads)
    sc = SynthConfig(batch=args.batch, apa=not args.no_apa, msr=not args.no_msr, sl=not args.no_sl, chunk=args.chunk)
    if args.alpha1 is not None:
        sc = replace(sc, alpha1=args.alpha1)
    if args.iters is not None:
        sc = replace(sc, iters=args.iters)
    real_pool = None
    if args.images is not None:
        eval_x, eval_y = pipeline.load_image_folder(args.images, cfg, args.labels, args.limit)
        if args.calib == "real":
            if args.calib_images is None:
                raise ValueError("--calib real with --images needs --calib-images DIR (real calibration images)")
            real_pool, _ = pipeline.load_image_folder(args.calib_images, cfg)
    else:
        if cfg.img_size != 28 or cfg.in_chans != 1:
            raise ValueError(f"model expects {cfg.in_chans}x{cfg.img_size}x{cfg.img_size} inputs; pass --images DIR")
        eval_x, eval_y = pipeline.fashion_mnist(cfg, "test", args.data, args.limit)
        if args.calib == "real":
            real_pool, _ = pipeline.fashion_mnist(cfg, "train", args.data)
    print(f"dfq: {args.calib} calibration, W{args.wbits}A{args.abits}, seed {args.seed}, "
          f"{len(eval_y)} evaluation images", file=sys.stderr)
    record, images, _ = pipeline.run_config(params, cfg, args.calib, args.wbits, args.abits, args.seed, eval_x,
                                            eval_y, sc, real_pool, args.recon_iters, integer=args.integer,
                                            compare_integer=args.compare_integer)
    if args.save_images:
        from refq.models.vit_train import predict

        pipeline.save_image_grid(images, cfg, args.save_images, scale=max(1, 112 // cfg.img_size))
        record["fp_predictions"] = predict(params, cfg, images).argmax(-1).tolist()
        record["images_png"] = args.save_images
    if args.json:
        print(json.dumps(record))
        return 0
    what = args.calib
    if args.calib == "sardfq":
        parts = [name for name, on in (("APA", sc.apa), ("MSR", sc.msr), ("SL", sc.sl)) if on]
        what += f" ({'+'.join(parts) or 'none'})"
    s = record["seconds"]
    print(f"W{args.wbits}A{args.abits} {what}, seed {args.seed}: top-1 {100 * record['top1']:.2f}% on "
          f"{record['n_eval']} images (synthesis {s['synthesis']:.0f} s = {s['synthesis_per_image']:.2f} s/image, "
          f"reconstruction {s['reconstruction']:.0f} s)")
    if args.compare_integer:
        print(f"integer kernels top-1 {100 * record['integer_top1']:.2f}%, fake-quant simulation "
              f"{100 * record['simulated_top1']:.2f}%, same prediction on {100 * record['integer_agreement']:.2f}% "
              f"of the images")
    return 0
