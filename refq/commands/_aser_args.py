"""Command-line options of the ASER commands (`refq lm quantize`, `refq minilm quantize`) and their mapping to
QuantSettings. Light on purpose: imported when the CLI parser is built, so nothing heavy is imported here.

References: docs/aser.md, A2-A8 (the settings and ablations exposed as flags).
"""
from __future__ import annotations

METHOD_NAMES = ("rtn", "smoothquant", "lorc", "l2qer", "gptq", "aser")


def add_quant_arguments(p, default_rank: int) -> None:
    """--method, --wbits, --abits, rank rule, outliers, smoothing and ablation flags, --json."""
    p.add_argument("--method", required=True, choices=METHOD_NAMES)
    p.add_argument("--wbits", type=int, default=4, help="weight bits, 2..8 (default 4)")
    p.add_argument("--abits", type=int, default=8, help="activation bits, 2..8, or 16 = float activations (default 8)")
    rank = p.add_mutually_exclusive_group()
    rank.add_argument("--rank", type=int, default=None,
                      help=f"rank of the low-rank branch, lorc/l2qer/aser (default {default_rank})")
    rank.add_argument("--energy", type=float, default=None,
                      help="instead of --rank: per layer, the smallest rank holding this fraction of the "
                           "spectrum's sum (capped by --r-max, default half the layer's smaller side)")
    p.add_argument("--r-max", type=int, default=None, help="cap of the --energy rule")
    p.add_argument("--outliers", type=int, default=None,
                   help="aser: outlier channels f per layer (default 1%% of d_in, at least 1)")
    p.add_argument("--alpha", type=float, default=0.5, help="smoothing migration strength (default 0.5)")
    p.add_argument("--smooth-scope", choices=("layer", "shared"), default=None,
                   help="smoothing per linear (online) or shared by the linears after one norm "
                        "(default: shared for smoothquant, layer for aser)")
    p.add_argument("--no-smooth", action="store_true", help="aser: error reconstruction only (no AS)")
    p.add_argument("--base", choices=("rtn", "gptq"), default="rtn", help="weight quantizer under the low-rank branch")
    p.add_argument("--whitening", choices=("cholesky", "diag"), default="cholesky", help="aser: whitening ablation")
    p.add_argument("--mask-outliers", action="store_true",
                   help="aser: zero the outlier channels before the activation quantizer")
    p.add_argument("--lr-input-quantized", action="store_true", help="feed Q_A(x) to the low-rank branch")
    p.add_argument("--act-order", action="store_true", help="gptq: columns by decreasing H_jj")
    p.add_argument("--integer", action="store_true",
                   help="run the quantized GEMMs on the Numba integer kernels instead of the fake-quant simulation")
    p.add_argument("--seed", type=int, default=0, help="seed of the data-free calibration sampler (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON record")


def settings_from_args(args, default_rank: int):
    """QuantSettings of the parsed options (ValueError on bad values)."""
    from refq.aser.settings import QuantSettings

    if args.abits not in (16,) and not 2 <= args.abits <= 8:
        raise ValueError(f"--abits {args.abits} must be in 2..8 or 16 (float activations)")
    lowrank = args.method in ("lorc", "l2qer", "aser")
    rank = args.rank if args.rank is not None else (None if args.energy is not None else default_rank)
    return QuantSettings(wbits=args.wbits, abits=None if args.abits == 16 else args.abits,
                         rank=rank if lowrank else None, energy=args.energy if lowrank else None,
                         r_max=args.r_max, outliers=args.outliers, alpha=args.alpha,
                         smooth=not args.no_smooth, smooth_scope=args.smooth_scope, base=args.base,
                         whitening=args.whitening, mask_outlier_acts=args.mask_outliers,
                         lr_input_quantized=args.lr_input_quantized, act_order=args.act_order)
