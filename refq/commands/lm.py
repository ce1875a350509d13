"""`refq lm ...`: llama2.c language models (stories260K & co.): generate text like run.c, perplexity.

Sub-subcommands are registered from `SUBCOMMANDS`; to add one (e.g. `refq lm quantize`), write a
`register_xxx(lm_subparsers)` that uses `add_model_arguments` / `load_model` and append it there.
"""
from __future__ import annotations

import json
import sys
import time

from refq.commands._args import float_in, input_file, int_in, positive_int

SEED_MAX = (1 << 64) - 1


def add_model_arguments(p) -> None:
    """--checkpoint and --tokenizer, shared by every `refq lm` sub-subcommand."""
    p.add_argument("--checkpoint", required=True, type=input_file,
                   help="llama2.c .bin checkpoint (legacy or version 1)")
    p.add_argument("--tokenizer", required=True, type=input_file, help="llama2.c tokenizer .bin (e.g. tok512.bin)")


def load_model(args):
    """(params, LlamaConfig, LlamaTokenizer) from --checkpoint and --tokenizer."""
    from refq.io.llama2c import read_checkpoint
    from refq.models.llama import LlamaConfig
    from refq.models.llama_tokenizer import LlamaTokenizer

    params, config = read_checkpoint(args.checkpoint)
    cfg = LlamaConfig.from_dict(config)
    return params, cfg, LlamaTokenizer.from_file(args.tokenizer, vocab_size=cfg.vocab_size)


def register_generate(sub) -> None:
    g = sub.add_parser("generate", help="sample text exactly like llama2.c's run.c",
                       description="Generate text from a llama2.c checkpoint. stdout is byte for byte what "
                                   "`./run CHECKPOINT -z TOKENIZER -t T -p P -s SEED -n STEPS -i PROMPT` prints; "
                                   "the seed and the tok/s line go to stderr. As in run.c, --seed 0 takes the "
                                   "seed from the clock (the seed used is printed) and a negative seed is "
                                   "taken modulo 2^64 (C's conversion to unsigned long long); greedy decoding "
                                   "(--temperature 0) draws no random numbers, so the seed does not matter.")
    add_model_arguments(g)
    g.add_argument("--prompt", default="", help="text the story starts with (default: empty)")
    g.add_argument("--steps", type=int_in(0, 1 << 31), default=256,
                   help="positions to run, prompt included; 0 = seq_len (default 256)")
    g.add_argument("--temperature", type=float_in(0.0, float("inf")), default=1.0,
                   help="finite, >= 0; 0 = greedy argmax (default 1.0)")
    g.add_argument("--top-p", type=float_in(0.0, 1.0), default=0.9,
                   help="nucleus sampling threshold in [0, 1]; 0 or 1 = off (default 0.9)")
    g.add_argument("--seed", type=int_in(-(1 << 63), SEED_MAX), default=133742,
                   help="xorshift seed (default 133742): 1..2^64-1 as given, 0 = from the clock like run.c "
                        "(time(NULL)), negative = modulo 2^64 like run.c")
    g.set_defaults(func=_generate)


def register_ppl(sub) -> None:
    q = sub.add_parser("ppl", help="perplexity on a text file (one story per line)",
                       description="Perplexity of a llama2.c model on a text file: each non-empty line is a "
                                   "story, encoded with BOS; the stories are concatenated and scored in "
                                   "windows of --window tokens (default seq_len) advancing by --stride "
                                   "(default: the window, i.e. non-overlapping). See refq.models.perplexity.")
    add_model_arguments(q)
    q.add_argument("--text", required=True, type=input_file, help="UTF-8 text file, one story per line")
    q.add_argument("--window", type=positive_int, default=None, help="tokens per window (default: the model's seq_len)")
    q.add_argument("--stride", type=positive_int, default=None, help="window advance (default: --window)")
    q.add_argument("--json", action="store_true", help="print a JSON record")
    q.set_defaults(func=_ppl)


def register_quantize(sub) -> None:
    from refq.commands._aser_args import add_quant_arguments

    q = sub.add_parser("quantize", help="post-training quantization (ASER and baselines), perplexity before/after",
                       description="Quantize every linear inside the transformer blocks with one method (ASER or a "
                                   "baseline), calibrated on the first --calib-stories distinct stories of --text "
                                   "(or, with --calib generated, on text sampled from the FP model with --seed), "
                                   "and print the perplexity of the FP and the quantized model on the remaining "
                                   "distinct stories, plus the low-rank branch's parameter / FLOP overhead. "
                                   "See refq.aser.experiment.")
    add_model_arguments(q)
    q.add_argument("--text", required=True, type=input_file, help="UTF-8 text file, one story per line")
    q.add_argument("--calib", choices=("text", "generated"), default="text", help="calibration data (default text)")
    q.add_argument("--calib-stories", type=positive_int, default=4,
                   help="distinct stories used for calibration (default 4)")
    q.add_argument("--calib-tokens", type=positive_int, default=2560, help="tokens to generate with --calib generated")
    q.add_argument("--eval-tokens", type=positive_int, default=None, help="score only the first N evaluation tokens")
    add_quant_arguments(q, default_rank=4)
    q.set_defaults(func=_quantize)


def _quantize(args) -> int:
    from refq.commands._aser_args import settings_from_args
    from refq.aser.experiment import prepare_llama, run_llama

    settings = settings_from_args(args, default_rank=4)
    exp = prepare_llama(args.checkpoint, args.tokenizer, args.text, args.calib, args.calib_stories,
                        args.calib_tokens, args.seed, args.eval_tokens, verbose=True)
    record = run_llama(exp, args.method, settings, integer=args.integer, verbose=True)
    record.update(rank=settings.rank, energy=settings.energy, seed=args.seed, integer=args.integer)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "text": args.text, **record}))
    else:
        print(f"{args.method} W{record['wbits']}A{record['abits']}: perplexity FP {record['ppl_fp']:.4f} -> "
              f"quantized {record['ppl']:.4f} ({record['eval_tokens']} eval tokens, {args.calib} calibration "
              f"of {record['calib_tokens']} tokens)")
        print(f"low-rank branch: {record['lowrank_params']} parameters = {record['overhead_pct']:.2f}% of the "
              f"{record['quantized_weights']} quantized weights, and {record['overhead_pct']:.2f}% extra "
              f"multiply-adds per token in those layers (ranks {record['rank_min']}..{record['rank_max']})")
    return 0


def register_table(sub) -> None:
    t = sub.add_parser("table", help="regenerate the README's ASER tables (stories260K, MiniLM)",
                       description="The ASER tables of the README and docs/aser.md: methods x settings, rank sweep "
                                   "and ablation per model. Markdown goes to stdout, then (--format both or json) "
                                   "one JSON document with every record and the runtime; progress goes to stderr. "
                                   "Run with OPENBLAS_NUM_THREADS=1 to time it honestly. See refq.aser.table.")
    t.add_argument("--models", nargs="+", choices=("stories260k", "minilm"), default=["stories260k", "minilm"])
    t.add_argument("--assets", default=None, help="assets folder (default: $REFQ_ASSETS or ../shared/assets)")
    t.add_argument("--format", choices=("markdown", "json", "both"), default="both")
    t.set_defaults(func=_table)


def _table(args) -> int:
    from pathlib import Path

    from refq.aser.table import default_assets, minilm, stories260k

    assets = Path(args.assets) if args.assets else default_assets()
    out, lines = {}, []
    for model in args.models:
        start = time.perf_counter()
        records, model_lines = (stories260k if model == "stories260k" else minilm)(assets)
        seconds = time.perf_counter() - start
        out[model] = {**records, "runtime_s": seconds}
        lines += model_lines + ["", f"({model}: {seconds:.0f} s)", ""]
        print(f"table: {model} done in {seconds:.0f} s", file=sys.stderr)
    if args.format in ("markdown", "both"):
        print("\n".join(lines))
    if args.format in ("json", "both"):
        print(json.dumps(out, default=float))
    return 0


SUBCOMMANDS = (register_generate, register_ppl, register_quantize, register_table)


def register(subparsers) -> None:
    p = subparsers.add_parser("lm", help="llama2.c language models: generate text, perplexity, quantize, tables",
                              description="llama2.c checkpoints (e.g. stories260K) on refq's NumPy Llama.")
    sub = p.add_subparsers(dest="lm_command", metavar="LM_COMMAND")
    for register_subcommand in SUBCOMMANDS:
        register_subcommand(sub)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _generate(args) -> int:
    from refq.models.llama import generate_tokens
    from refq.models.llama_tokenizer import printable
    from refq.models.sampling import Sampler

    params, cfg, tokenizer = load_model(args)
    if args.steps < 0 or args.steps > cfg.seq_len:
        raise ValueError(f"--steps {args.steps} must be in 0..seq_len={cfg.seq_len} (0 = seq_len)")
    steps = args.steps or cfg.seq_len
    seed = run_c_seed(args.seed)
    sampler = Sampler(args.temperature, args.top_p, seed)
    print(f"seed: {seed}", file=sys.stderr)
    prompt = tokenizer.encode(args.prompt, bos=True, eos=False)
    out, prev, count, start = sys.stdout.buffer, prompt[0], 0, None
    for token in generate_tokens(params, cfg, prompt, steps, sampler):
        out.write(printable(tokenizer.decode_piece(prev, token)))
        out.flush()
        prev, count = token, count + 1
        if start is None:  # like run.c, time from the end of the first step
            start = time.perf_counter()
    out.write(b"\n")
    out.flush()
    if count > 1:
        print(f"achieved tok/s: {(count - 1) / (time.perf_counter() - start):f}", file=sys.stderr)
    return 0


def run_c_seed(seed: int, now: float | None = None) -> int:
    """The xorshift seed run.c uses for `-s seed`: 0 -> (unsigned int)time(NULL), negative -> seed mod 2^64."""
    if seed == 0:
        return int(time.time() if now is None else now) & 0xFFFFFFFF or 1
    return seed & SEED_MAX


def _ppl(args) -> int:
    from pathlib import Path

    from refq.models.perplexity import perplexity, stories_to_tokens

    params, cfg, tokenizer = load_model(args)
    ids = stories_to_tokens(tokenizer, Path(args.text).read_text(encoding="utf-8"))
    print(f"ppl: {args.text}: {ids.size} tokens", file=sys.stderr)
    result = perplexity(params, cfg, ids, window=args.window, stride=args.stride, verbose=True)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "text": args.text, **result}))
    else:
        print(f"mean NLL {result['nll']:.4f} nats/token, perplexity {result['ppl']:.4f} "
              f"({result['tokens']} tokens, {result['windows']} windows of {result['window']}, "
              f"stride {result['stride']})")
    return 0
