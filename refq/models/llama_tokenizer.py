"""The byte-pair tokenizer of llama2.c (SentencePiece-style BPE pieces with byte fallback).

Encoding, as run.c does it:
  1. optional BOS (id 1); then, for non-empty text, the piece " " (SentencePiece's dummy prefix);
  2. every UTF-8 code point becomes its piece if the vocabulary has it, otherwise one "<0xXX>" token per
     byte, whose id is byte + 3 (ids 0, 1, 2 are <unk>, BOS, EOS);
  3. repeatedly merge the adjacent pair whose concatenated piece is in the vocabulary with the highest
     score (leftmost pair on ties; scores <= -1e10 never merge), until no pair merges;
  4. optional EOS (id 2).
Pieces are compared as stored, so a byte token merges by its literal text "<0xE2>" (and so never does).
Decoding: a piece that follows BOS loses one leading space; "<0xXX>" pieces become the raw byte.
`printable` applies run.c's safe-printing rule (a lone byte is printed only if it is printable ASCII or
whitespace), which drops the raw bytes of multi-byte characters from run.c's output.

`encode_naive` is step 3 written literally (quadratic); `encode` does the same merges with a heap and a
linked list (lazily discarding stale pairs), and a test checks that they agree.

References: Sennrich et al., "Neural Machine Translation of Rare Words with Subword Units", ACL 2016
(BPE); Kudo & Richardson, "SentencePiece", EMNLP 2018 (dummy prefix, byte fallback); karpathy/llama2.c
run.c (encode, decode, safe_printf).
"""
from __future__ import annotations

import heapq
import re
from pathlib import Path

import numpy as np

from refq.io.llama2c import read_tokenizer

BOS, EOS, BYTE_OFFSET = 1, 2, 3
NO_MERGE_SCORE = np.float32(-1e10)  # run.c's initial best score: pairs scoring at most this never merge
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")
_WHITESPACE = b" \t\n\v\f\r"


class LlamaTokenizer:
    """Vocabulary, merge scores and piece lookup of a llama2.c tokenizer."""

    def __init__(self, vocab: list[bytes], scores: np.ndarray, max_token_length: int):
        if len(vocab) != len(scores):
            raise ValueError(f"LlamaTokenizer: {len(vocab)} pieces but {len(scores)} scores")
        if len(vocab) < BYTE_OFFSET + 256:
            raise ValueError(f"LlamaTokenizer: vocab has {len(vocab)} pieces, byte fallback needs "
                             f"at least {BYTE_OFFSET + 256}")
        for b in range(256):
            if vocab[BYTE_OFFSET + b] != b"<0x%02X>" % b:
                raise ValueError(f"LlamaTokenizer: piece {BYTE_OFFSET + b} is {vocab[BYTE_OFFSET + b]!r}, "
                                 f"byte fallback expects <0x{b:02X}>")
        self.vocab = list(vocab)
        self.scores = np.asarray(scores, dtype=np.float32)
        self.max_token_length = int(max_token_length)
        self.ids: dict[bytes, int] = {}
        for i, piece in enumerate(self.vocab):  # duplicates: the lowest id wins
            self.ids.setdefault(piece, i)
        if b" " not in self.ids:
            raise ValueError("LlamaTokenizer: vocab has no ' ' piece for the dummy prefix")

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int | None = None) -> "LlamaTokenizer":
        """Load a llama2.c tokenizer .bin file."""
        return cls(*read_tokenizer(path, vocab_size))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _initial_tokens(self, text: str, bos: bool) -> list[int]:
        """Steps 1-2: BOS, dummy prefix, one token per code point (or per byte as fallback)."""
        tokens = [BOS] if bos else []
        if text:
            tokens.append(self.ids[b" "])
        for ch in text:
            piece = ch.encode("utf-8")
            if piece in self.ids:
                tokens.append(self.ids[piece])
            else:
                tokens.extend(b + BYTE_OFFSET for b in piece)
        return tokens

    def _merge_id(self, left: int, right: int) -> int | None:
        """Id of the piece vocab[left] + vocab[right] if it exists and may merge, else None."""
        merged = self.ids.get(self.vocab[left] + self.vocab[right])
        if merged is None or not self.scores[merged] > NO_MERGE_SCORE:
            return None
        return merged

    def encode_naive(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """run.c's encode literally: rescan all adjacent pairs after every merge (quadratic)."""
        tokens = self._initial_tokens(text, bos)
        while True:
            best, best_i = None, -1
            for i in range(len(tokens) - 1):
                merged = self._merge_id(tokens[i], tokens[i + 1])
                if merged is not None and (best is None or self.scores[merged] > self.scores[best]):
                    best, best_i = merged, i
            if best is None:
                break
            tokens[best_i:best_i + 2] = [best]
        return tokens + [EOS] if eos else tokens

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of text (same result as encode_naive, in O(n log n))."""
        tokens = self._initial_tokens(text, bos)
        n = len(tokens)
        nxt, prv, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
        heap = []

        def push(i: int) -> None:  # candidate merge of node i with its right neighbour
            j = nxt[i]
            if j < n:
                merged = self._merge_id(tokens[i], tokens[j])
                if merged is not None:  # highest score first, then leftmost (node order = text order)
                    heapq.heappush(heap, (-float(self.scores[merged]), i, j, tokens[i], tokens[j], merged))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, j, left, right, merged = heapq.heappop(heap)
            if not (alive[i] and alive[j] and nxt[i] == j and tokens[i] == left and tokens[j] == right):
                continue  # stale: one side has merged since this pair was pushed
            tokens[i], alive[j] = merged, False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            push(i)
            if prv[i] >= 0:
                push(prv[i])
        out = [t for t, a in zip(tokens, alive) if a]
        return out + [EOS] if eos else out

    def decode_piece(self, prev: int, token: int) -> bytes:
        """Bytes of token following prev: no leading space right after BOS, raw byte for <0xXX>."""
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"decode_piece: token {token} outside the vocabulary of {self.vocab_size}")
        piece = self.vocab[token]
        if prev == BOS and piece[:1] == b" ":
            piece = piece[1:]
        match = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(match.group(1), 16)]) if match else piece

    def decode(self, ids: list[int]) -> str:
        """Text of a token sequence; BOS and EOS print nothing, invalid UTF-8 becomes U+FFFD."""
        out, prev = [], None
        for token in ids:
            if token not in (BOS, EOS):
                out.append(self.decode_piece(prev, token))
            prev = token
        return b"".join(out).decode("utf-8", errors="replace")


def printable(piece: bytes) -> bytes:
    """run.c's safe printing: a single byte that is neither printable ASCII nor whitespace prints nothing."""
    if len(piece) == 1 and not (0x20 <= piece[0] <= 0x7E or piece in _WHITESPACE):
        return b""
    return piece
