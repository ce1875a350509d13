"""llama2.c BPE tokenizer: round trip, the fast merge loop against the literal one, byte fallback, decoding rules."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from refq.models.llama_tokenizer import BOS, EOS, LlamaTokenizer, printable
from tests.assets import asset

# printable unicode: no control characters (Cc) and no lone surrogates (Cs, not encodable as UTF-8)
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=60)
# stories-like text, where merges matter most
WORDS = st.lists(st.sampled_from(["Once", " upon", " a", " time", ",", " Lily", " the", "ball", ".", " ",
                                  "\"", "'s", "é", "ü", "猫", "😀", "aa", "ee"]), max_size=25).map("".join)


@pytest.fixture(scope="module")
def tok512():
    return LlamaTokenizer.from_file(asset("llama2c/tok512.bin"), vocab_size=512)


def synthetic(extra: list[tuple[bytes, float]]) -> LlamaTokenizer:
    """<unk>, BOS, EOS, 256 byte tokens, then the given (piece, score) pairs."""
    vocab = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)] + [p for p, _ in extra]
    scores = np.zeros(len(vocab), np.float32)
    scores[259:] = [s for _, s in extra]
    return LlamaTokenizer(vocab, scores, max(len(p) for p in vocab))


@given(text=TEXT | WORDS)
def test_decode_encode_round_trip(tok512, text):
    ids = tok512.encode(text, bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert tok512.decode(ids) == text


@given(text=TEXT | WORDS)
def test_fast_merges_equal_literal_merges(tok512, text):
    assert tok512.encode(text) == tok512.encode_naive(text)


@given(text=st.text(st.sampled_from("ab "), max_size=30),
       scores=st.lists(st.sampled_from([-1.0, 0.0, 2.0]), min_size=4, max_size=4))
def test_tie_breaking_matches_literal_merges(text, scores):
    """Equal scores everywhere: both must pick the leftmost best pair, every time."""
    tok = synthetic([(b" ", -5.0), (b"a", -5.0), (b"b", -5.0), (b"aa", scores[0]), (b"ab", scores[1]),
                     (b"ba", scores[2]), (b"aaa", scores[3]), (b"aab", scores[1]), (b" a", scores[0])])
    assert tok.encode(text) == tok.encode_naive(text)


def test_leftmost_pair_wins_a_tie():
    tok = synthetic([(b" ", -9.0), (b"a", -9.0), (b"aa", 1.0)])
    aa, a, space = tok.ids[b"aa"], tok.ids[b"a"], tok.ids[b" "]
    assert tok.encode("aaa", bos=False) == [space, aa, a]


def test_very_low_scores_never_merge():
    tok = synthetic([(b" ", 0.0), (b"a", 0.0), (b"aa", -2e10)])
    assert tok.encode("aa", bos=False) == [tok.ids[b" "], tok.ids[b"a"], tok.ids[b"a"]]


def test_empty_text_and_dummy_prefix(tok512):
    assert tok512.encode("", bos=True) == [BOS]
    assert tok512.encode("", bos=False, eos=True) == [EOS]
    ids = tok512.encode("Once", bos=False)
    assert tok512.vocab[ids[0]].startswith(b" ")  # the dummy prefix merged into " Once"-style pieces


def test_byte_fallback(tok512):
    ids = tok512.encode("猫", bos=False)  # not in a 512-piece vocabulary: three UTF-8 bytes
    assert ids == [tok512.ids[b" "]] + [b + 3 for b in "猫".encode()]
    assert [tok512.vocab[i] for i in ids[1:]] == [b"<0xE7>", b"<0x8C>", b"<0xAB>"]
    assert tok512.decode_piece(ids[1], ids[2]) == b"\x8c"


def test_decode_strips_one_space_after_bos_only(tok512):
    space_t = tok512.encode(" t", bos=False)  # dummy prefix + " t" -> "  t" pieces
    assert tok512.decode([BOS] + space_t) == " t"
    assert tok512.decode_piece(BOS, tok512.ids[b" the"]) == b"the"
    assert tok512.decode_piece(5, tok512.ids[b" the"]) == b" the"
    with pytest.raises(ValueError, match="token 512 outside"):
        tok512.decode_piece(BOS, 512)


def test_printable_follows_run_c():
    assert printable(b"\n") == b"\n" and printable(b"a") == b"a" and printable(b"\t") == b"\t"
    assert printable(b"\x07") == b"" and printable(b"\xe7") == b"" and printable(b"\x7f") == b""
    assert printable(b"\xe7\x8c\xab") == b"\xe7\x8c\xab" and printable(b"") == b""


def test_rejects_vocab_without_byte_tokens():
    with pytest.raises(ValueError, match="byte fallback expects <0x00>"):
        LlamaTokenizer([b"<unk>", b"<s>", b"</s>"] + [b"x"] * 300, np.zeros(303, np.float32), 5)
