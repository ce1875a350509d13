"""`refq tour`: the main job on the embedded defaults, about a minute, nothing to download.

    refq tour [--out DIR] [--seed S] [--quick]

1. integer kernels: the Numba int8 GEMM against NumPy float32 matmul (512^3, same run, bit-exactness);
2. SARDFQ: the shipped Fashion-MNIST ViT (refq/weights/vit_fmnist.npz) on the shipped sample of 500 test
   images; W4A4 with calibration images from Gaussian noise and from SARDFQ synthesis (small settings:
   16 images, 2 x 40 iterations, 20 reconstruction steps per block), and the synthetic images as a PNG;
3. text spotter: the shipped spotter (refq/weights/spotter.npz) on the shipped demo scene, float and int8,
   scored against its ground truth, with an overlay PNG;
4. ASER: needs an LLM checkpoint, which cannot ship; the tour prints the command that runs it.
The full-size experiments are the README's tables (`refq vit table`, `refq lm table`, `refq spot table`).
"""
from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("tour", help="a one-minute tour of refq on its shipped weights (the README's main job)",
                              description="Runs each part of refq once on the weights and data that ship with it: "
                                          "int8 GEMM vs float32, SARDFQ W4A4 on the shipped ViT, the text spotter "
                                          "(float and int8) on a demo scene. Writes PNG figures to --out.")
    p.add_argument("--out", default="refq_tour", help="folder for the figures (default ./refq_tour)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthesis and reconstruction (default 0)")
    p.add_argument("--quick", action="store_true", help="even smaller settings (smoke test; numbers are rougher)")
    p.set_defaults(func=_tour)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _kernels(quick: bool) -> None:
    import numpy as np

    from refq.bench import interleaved_times
    from refq.kernels import gemm_int8
    from refq.kernels.reference import gemm_int8_ref

    n = 256 if quick else 512
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (n, n), dtype=np.int8)  # [M, K]
    b = rng.integers(-128, 128, (n, n), dtype=np.int8)  # [N, K]
    af, bf = a.astype(np.float32), b.T.astype(np.float32).copy()  # [M, K], [K, N]
    c = gemm_int8(a, b)  # [M, N] int32; the first call compiles (or loads the Numba cache)
    af @ bf  # starts the BLAS threads
    # turns of 3 timed calls, each after a 0.2 s pause that lets the other contender's threads go idle
    times = interleaved_times({"int8": lambda: gemm_int8(a, b), "f32": lambda: af @ bf}, 3 if quick else 5,
                              pause=0.2, burst=3)
    best_i, best_f = times["int8"].min(), times["f32"].min()
    exact = bool(np.array_equal(c, gemm_int8_ref(a, b)))
    ops = 2.0 * n ** 3
    _say(f"  {n}x{n}x{n}: int8 {ops / best_i / 1e9:.0f} GOP/s, NumPy float32 {ops / best_f / 1e9:.0f} GFLOP/s "
         f"(int8/f32 {best_f / best_i:.2f}x), bit-exact vs int64 NumPy: {exact}")
    if best_f < best_i:
        _say("  (slower than float here: with other jobs on the machine, Numba's parallel kernels wait for busy "
             "cores; `OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 refq bench gemm` compares one core each)")


def _sardfq(out: Path, seed: int, quick: bool) -> None:
    from refq.data.fashion_mnist import load_sample
    from refq.models import vit
    from refq.models.vit_train import accuracy
    from refq.pretrained import FMNIST_SAMPLE, load_vit
    from refq.sardfq import pipeline
    from refq.sardfq.synthesis import SynthConfig

    params, cfg, manifest = load_vit()
    images, labels = load_sample(FMNIST_SAMPLE)
    x = vit.normalize_images(images[:, None], cfg)  # uint8 [500, 1, 28, 28] -> normalised float32
    _say(f"  shipped ViT: {cfg.depth} blocks, width {cfg.embed_dim}, {cfg.num_heads} heads; "
         f"full test set top-1 {100 * manifest['test_top1']:.2f}% (from its manifest)")
    fp_top1 = accuracy(params, cfg, x, labels)
    _say(f"  FP32 top-1 on the shipped {len(labels)}-image sample: {100 * fp_top1:.2f}%")
    sc = SynthConfig(batch=8 if quick else 16, iters=10 if quick else 40, log_every=10 ** 6)
    recon = 5 if quick else 20
    quiet = lambda msg: None  # noqa: E731 - the tour prints its own summary lines
    for calib in ("noise", "sardfq"):
        t = time.time()
        record, synth, _ = pipeline.run_config(params, cfg, calib, 4, 4, seed, x, labels, sc, recon_iters=recon,
                                               log=quiet)
        _say(f"  W4A4, calibration from {calib:6s}: top-1 {100 * record['top1']:.2f}% "
             f"({len(synth)} images, {time.time() - t:.0f} s)")
        if calib == "sardfq":
            pipeline.save_image_grid(synth, cfg, out / "sardfq_images.png", scale=4)
            _say(f"  synthetic calibration images: {out / 'sardfq_images.png'}")
    se = 100 * (fp_top1 * (1 - fp_top1) / len(labels)) ** 0.5  # binomial standard error of one top-1 figure
    _say(f"  on {len(labels)} images one standard error of a top-1 figure is about {se:.1f} points, so differences "
         f"of that size are noise; the 3-seed table on the 10k test set is in README.md")


def _spotter(out: Path) -> None:
    import numpy as np
    from PIL import Image

    from refq.pretrained import DEMO_SCENE, DEMO_SCENE_GT
    from refq.spotter.boxes import quad_to_aabb
    from refq.spotter.icdar import read_icdar_gt
    from refq.spotter.infer import load_spotter, spot_images
    from refq.spotter.evaluate import end_to_end_counts
    from refq.spotter.overlay import draw_overlay
    from refq.models.ops import FLOAT_OPS
    from refq.spotter.quantized import quantize_spotter

    params, cfg, _ = load_spotter()
    image = np.asarray(Image.open(DEMO_SCENE).convert("L"), dtype=np.uint8)  # [256, 256]
    gt = read_icdar_gt(DEMO_SCENE_GT)
    gt_boxes = quad_to_aabb(np.array([w.quad for w in gt]))  # [N, 4] x0 y0 x1 y1
    gt_texts = [w.text for w in gt]
    _say(f"  demo scene ground truth: {' | '.join(gt_texts)}")
    for name, ops in (("float", FLOAT_OPS), ("int8", quantize_spotter(params, cfg))):
        spot_images(params, cfg, [image], ops=ops)  # warm-up (Numba compilation on the first int8 call)
        t = time.perf_counter()
        words = spot_images(params, cfg, [image], ops=ops)[0]
        ms = 1e3 * (time.perf_counter() - t)
        counts = end_to_end_counts(gt_boxes, gt_texts, np.array([w["box"] for w in words]).reshape(-1, 4),
                                   [w["text"] for w in words])
        found = " | ".join(f"{w['text']} ({w['score']:.2f})" for w in words)
        _say(f"  {name:5s}: {found}   [{counts.matched}/{len(gt_texts)} words right, {ms:.0f} ms]")
        if name == "float":
            draw_overlay(image, words, out / "spotter_overlay.png")
            _say(f"  overlay: {out / 'spotter_overlay.png'}")


def _tour(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    _say("refq tour: every number below is measured now, on this machine, from the shipped weights.\n")
    _say("[1/4] Integer kernels (refq/kernels): int8 x int8 -> int32 GEMM vs NumPy float32 matmul")
    _kernels(args.quick)
    _say("\n[2/4] SARDFQ data-free quantization of a ViT (refq/sardfq), W4A4 with block reconstruction")
    _sardfq(out, args.seed, args.quick)
    _say("\n[3/4] Joint text spotter (refq/spotter): shared CNN backbone, text pooling, CTC recognizer")
    _spotter(out)
    _say("\n[4/4] ASER LLM post-training quantization (refq/aser) needs an LLM checkpoint, which cannot ship. "
         "With llama2.c's stories260K:\n"
         "  refq lm quantize --checkpoint stories260K.bin --tokenizer tok512.bin --text STORIES.txt "
         "--method aser --wbits 4 --abits 8 --rank 4")
    _say(f"\ntour done in {time.time() - start:.0f} s; figures in {out}/. Full tables: README.md.")
    return 0

