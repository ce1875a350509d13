"""Edit distance between strings (or any sequences), used by lexicon decoding and recognition metrics.

Levenshtein distance with unit costs for insertion, deletion and
substitution, by the Wagner-Fischer dynamic programme
keeping two rows.

References:
    Wagner, Fischer, "The String-to-String Correction Problem", JACM 1974.
    docs/spotter.md, T7 (CER) and T8 (lexicon matching).
"""
from __future__ import annotations


def levenshtein(a, b) -> int:
    """Minimum number of single-element insertions, deletions and substitutions turning a into b."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))  # distances from a[:0] to every prefix of b
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1,  # delete ca
                               current[j - 1] + 1,  # insert cb
                               previous[j - 1] + (ca != cb)))  # substitute (or match)
        previous = current
    return previous[-1]
