"""Character alphabet for the CTC recognizer: class 0 is the blank, characters are 1..K-1.

Spec Sec. 1.2 ("Alphabet"): 0 = blank, then 0-9a-z (case-insensitive, as in
the ICDAR end-to-end comparisons), optionally A-Z and punctuation. The
synthetic scenes (`refq.spotter.words`) use mixed case, digits and the
punctuation in `PUNCTUATION`, so `DEFAULT_CHARS` covers all of them; a
case-insensitive alphabet (`Alphabet(CASE_INSENSITIVE_CHARS, case_insensitive=True)`)
folds upper case to lower case before encoding.

References:
    docs/spotter.md, T3 and T7 (case handling in evaluation).
    Shi, Bai, Yao, "An End-to-End Trainable Neural Network for Image-based
    Sequence Recognition" (CRNN), TPAMI 2017: label converter with index 0
    reserved for the blank.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

DIGITS = "0123456789"
LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = LOWER.upper()
PUNCTUATION = ".,:;!?'\"-&()/$%[]"
DEFAULT_CHARS = DIGITS + LOWER + UPPER + PUNCTUATION  # 79 characters, K = 80 classes
CASE_INSENSITIVE_CHARS = DIGITS + LOWER  # 36 characters, K = 37 classes


@dataclass(frozen=True)
class Alphabet:
    """Maps text to class ids 1..len(chars) and back; id 0 is the CTC blank."""

    chars: str = DEFAULT_CHARS
    case_insensitive: bool = False
    _index: dict = field(init=False, repr=False, compare=False)

    BLANK: ClassVar[int] = 0

    def __post_init__(self):
        if not isinstance(self.chars, str) or not self.chars:
            raise ValueError(f"Alphabet: chars={self.chars!r}, expected a non-empty string")
        seen = set()
        for c in self.chars:
            if c in seen:
                raise ValueError(f"Alphabet: character {c!r} appears twice in chars")
            if self.case_insensitive and c != c.lower():
                raise ValueError(f"Alphabet: case_insensitive alphabet contains upper-case {c!r}")
            seen.add(c)
        object.__setattr__(self, "_index", {c: i + 1 for i, c in enumerate(self.chars)})

    @property
    def num_classes(self) -> int:
        """K = number of characters + 1 (the blank)."""
        return len(self.chars) + 1

    def normalize(self, text: str) -> str:
        """The text as the alphabet sees it: case-folded if case-insensitive, unknown characters dropped."""
        text = text.lower() if self.case_insensitive else text
        return "".join(c for c in text if c in self._index)

    def encode(self, text: str) -> np.ndarray:
        """Class ids [L] (int32) of `text`; raises ValueError on a character outside the alphabet."""
        folded = text.lower() if self.case_insensitive else text
        ids = np.empty(len(folded), np.int32)  # [L]
        for i, c in enumerate(folded):
            if c not in self._index:
                raise ValueError(f"Alphabet.encode: character {c!r} of {text!r} is not in the alphabet")
            ids[i] = self._index[c]
        return ids

    def decode(self, ids) -> str:
        """Text of class ids 1..K-1 (no blanks; collapse CTC paths first)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"Alphabet.decode: ids have shape {ids.shape} and dtype {ids.dtype}, expected integer [L]")
        bad = np.flatnonzero((ids < 1) | (ids >= self.num_classes))
        if bad.size:
            raise ValueError(f"Alphabet.decode: id {ids[bad[0]]} at position {bad[0]} is outside 1..{self.num_classes - 1}")
        return "".join(self.chars[int(i) - 1] for i in ids)

    def encode_batch(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Padded labels [N, Lmax] (int32, padding 0) and label lengths [N] (int32)."""
        encoded = [self.encode(t) for t in texts]
        lengths = np.array([e.size for e in encoded], np.int32)  # [N]
        labels = np.zeros((len(encoded), max(lengths, default=0)), np.int32)  # [N, Lmax]
        for i, e in enumerate(encoded):
            labels[i, : e.size] = e
        return labels, lengths
