"""BERT's uncased WordPiece tokenizer, as used by all-MiniLM-L6-v2 (vocab.txt, 30,522 pieces).

Text -> ids in four steps:
  1. special tokens written literally in the text ("[SEP]", "[MASK]", ...) are split off first and kept whole;
  2. normalization: drop NUL, U+FFFD and control/format characters, turn whitespace into spaces, put spaces
     around CJK ideographs (each becomes its own word), strip accents (NFD, then drop non-spacing marks),
     lower-case;
  3. pre-tokenization: split on whitespace, and make every punctuation character a word of its own;
  4. WordPiece: each word becomes the longest vocabulary prefix, then the longest '##'-continuation, and so on;
     a word with an unmatched remainder (or longer than 100 characters) becomes the single token [UNK].
The sequence is wrapped as [CLS] ... [SEP] and truncated to max_length ids (256 for the sentence model).
The character classes follow the Hugging Face `tokenizers` BertNormalizer / BertPreTokenizer, which is what
the reference embeddings were made with.

References:
  Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
    NAACL 2019 (Sec. 3, input representation: WordPiece, [CLS], [SEP]).
  Wu et al., "Google's Neural Machine Translation System", 2016 (Sec. 4.1: wordpieces).
  Reimers & Gurevych, "Sentence-BERT", EMNLP 2019 (max sequence length of the sentence models).
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def load_vocab(path: str | Path) -> dict[str, int]:
    """Piece -> id from a vocab.txt (one piece per line, id = line number)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"vocabulary {path} not found")
    pieces = path.read_text(encoding="utf-8").split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    vocab = {piece: i for i, piece in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise ValueError(f"{path}: {len(pieces) - len(vocab)} duplicate pieces")
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"{path}: special tokens {missing} are not in the vocabulary")
    return vocab


def is_control(ch: str) -> bool:
    """Unicode 'other' categories (Cc, Cf, Cs, Co, Cn), except tab, newline and carriage return."""
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or ch.isspace()


def is_cjk(ch: str) -> bool:
    """A CJK Unified Ideograph (the blocks BERT splits into single characters; not kana or hangul)."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def is_punctuation(ch: str) -> bool:
    """ASCII punctuation and symbols (e.g. $, +, ^) or any Unicode punctuation category P*."""
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or \
        unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    """Clean, space out CJK ideographs, strip accents and lower-case (step 2)."""
    out = []
    for ch in text:
        if ch in "\x00\ufffd" or is_control(ch):
            continue
        if is_whitespace(ch):
            out.append(" ")
        elif is_cjk(ch):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    decomposed = unicodedata.normalize("NFD", "".join(out))
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn").lower()


def pre_tokenize(text: str) -> list[str]:
    """Split normalized text on whitespace and around each punctuation character (step 3)."""
    words, current = [], []
    for ch in text:
        if is_whitespace(ch) or is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            if not is_whitespace(ch):
                words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def wordpiece(word: str, vocab: dict[str, int], unk: str = "[UNK]") -> list[str]:
    """Greedy longest-match-first split of one word into vocabulary pieces (step 4)."""
    if len(word) > MAX_WORD_CHARS:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:  # no prefix of the remainder is in the vocabulary
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def tokenize(text: str, vocab: dict[str, int]) -> list[str]:
    """Text -> WordPiece tokens, without [CLS]/[SEP]."""
    tokens = []
    for part in _SPECIAL_RE.split(text):
        if part in SPECIAL_TOKENS:
            tokens.append(part)
            continue
        for word in pre_tokenize(normalize(part)):
            tokens.extend(wordpiece(word, vocab))
    return tokens


def encode(text: str, vocab: dict[str, int], max_length: int = 256) -> list[int]:
    """[CLS] tokens [SEP] as ids, the tokens truncated so that the whole fits in max_length."""
    if max_length < 2:
        raise ValueError(f"encode: max_length={max_length}, needs at least 2 for [CLS] and [SEP]")
    ids = [vocab[t] for t in tokenize(text, vocab)][: max_length - 2]
    return [vocab["[CLS]"], *ids, vocab["[SEP]"]]


def encode_batch(texts: list[str], vocab: dict[str, int], max_length: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, T] int64 padded with [PAD], attention mask [B, T] int64: 1 = real token, 0 = padding)."""
    if isinstance(texts, str) or not texts:
        raise ValueError(f"encode_batch: expected a non-empty list of strings, got {texts!r:.80}")
    rows = [encode(t, vocab, max_length) for t in texts]
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), vocab["[PAD]"], dtype=np.int64)  # [B, T]
    mask = np.zeros((len(rows), T), dtype=np.int64)  # [B, T]
    for b, row in enumerate(rows):
        ids[b, :len(row)] = row
        mask[b, :len(row)] = 1
    return ids, mask
