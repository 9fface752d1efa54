"""Properties of `IncrementalDecoder` against the real SmolLM2 tokenizer.

Proven for arbitrary token-id sequences (any vocabulary id, special tokens, encodings of
random Unicode text, and runs of single-byte tokens that split emoji, CJK and accented
letters at every byte, including truncated and stray bytes):

- the streamed pieces plus `flush()` equal the one-piece decode, byte for byte: what a
  client assembles from the stream is exactly the generated text;
- a piece contains U+FFFD only when the one-piece decode does: streaming never shows a
  replacement character for a character that was merely split across tokens;
- after every token the text emitted so far is a prefix of the decode of the tokens so far,
  and equals it unless that decode ends in U+FFFD: nothing is ever taken back, and text
  is held back only while a character may still be incomplete (streaming latency).

SmolLM2 is a byte-level BPE (GPT-2 style): it has no `<0xE2>` byte-fallback entries;
its 256 byte tokens are the single characters of GPT-2's byte-to-unicode table ("â" is
the byte 0xE2), and many merged tokens are fragments of a character ("ðŁ" is F0 9F).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from generator.decode.textstream import REPLACEMENT_CHAR, IncrementalDecoder
from generator.weights.checkpoint import read_tokenizer
from support.models import real_model_dir


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table, used by ByteLevel BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


@dataclass(frozen=True)
class Vocabulary:
    tokenizer: Any
    size: int
    special_ids: tuple[int, ...]
    byte_ids: dict[int, int]  # byte value → the id of its single-byte token, where it has one
    fragment_ids: tuple[int, ...]  # merged tokens whose bytes are not valid UTF-8 alone


@functools.cache
def vocabulary() -> Vocabulary:
    """The real tokenizer (as the generator loads it) and its byte-level inventory, loaded
    once per test session, on first use (not at collection)."""
    tokenizer = read_tokenizer(str(real_model_dir()))
    vocab: dict[str, int] = tokenizer.get_vocab()
    to_byte = {char: byte for byte, char in gpt2_bytes_to_unicode().items()}
    byte_ids = {to_byte[token]: i for token, i in vocab.items() if token in to_byte}
    # 21 bytes have no token of their own: the ASCII controls 04 06 13 14 16 1D, and C0 C1
    # F1 F2 F5-FF, which UTF-8 never or hardly uses. `SPELT_CHARS` avoids characters using them.
    assert len(byte_ids) >= 200, "expected a byte-level BPE with single-byte tokens"
    fragments = []
    for token, i in vocab.items():
        if len(token) > 1 and all(char in to_byte for char in token):
            try:
                bytes(to_byte[char] for char in token).decode("utf-8")
            except UnicodeDecodeError:
                fragments.append(i)
    assert fragments, "expected merged tokens that hold part of a multi-byte character"
    special = tuple(sorted({*tokenizer.all_special_ids, *tokenizer.added_tokens_decoder}))
    return Vocabulary(tokenizer, len(tokenizer), special, byte_ids, tuple(sorted(fragments)))


def one_piece(ids: list[int]) -> str:
    """How the tests and the API compare a stream with its ids: decoded all at once."""
    text: str = vocabulary().tokenizer.decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    return text


# -- strategies ----------------------------------------------------------------------------

# Characters whose UTF-8 form is 2, 3 or 4 bytes, weighted towards what models emit.
MULTIBYTE_CHARS = st.one_of(
    st.characters(min_codepoint=0xC0, max_codepoint=0x17F),  # accented Latin
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji
    st.sampled_from(["\u200d", "\ufe0f", "\u0301", "—", "✓", "€", "Ω", REPLACEMENT_CHAR]),
    st.characters(min_codepoint=0x80, codec="utf-8"),
)
TEXT = st.text(
    st.one_of(MULTIBYTE_CHARS, st.characters(max_codepoint=0x7F), st.sampled_from(" \n\t")),
    max_size=16,
)


def _encode(text: str) -> list[int]:
    ids: list[int] = vocabulary().tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def _byte_run(data: bytes) -> list[int]:
    table = vocabulary().byte_ids
    return [table[byte] for byte in data]


def _has_byte_tokens(char: str) -> bool:
    return all(byte in vocabulary().byte_ids for byte in char.encode())


# Characters spelt out one single-byte token per UTF-8 byte, as a model may sample them.
SPELT_CHARS = MULTIBYTE_CHARS.filter(_has_byte_tokens)


@st.composite
def _truncated_char(draw: st.DrawFn) -> list[int]:
    """A multi-byte character's single-byte tokens, cut short (a dangling lead byte)."""
    data = draw(SPELT_CHARS).encode()
    return _byte_run(data[: draw(st.integers(0, len(data) - 1))])


def _segments() -> st.SearchStrategy[list[int]]:
    vocab = vocabulary()
    any_id = st.integers(0, vocab.size - 1)
    return st.one_of(
        st.lists(any_id, min_size=1, max_size=4),
        TEXT.map(_encode),
        st.lists(SPELT_CHARS, min_size=1, max_size=4).map(lambda c: _byte_run("".join(c).encode())),
        _truncated_char(),
        # Stray continuation bytes, misordered and doubled lead bytes.
        st.lists(st.sampled_from(sorted(vocab.byte_ids.values())), min_size=1, max_size=6),
        st.lists(st.sampled_from(vocab.fragment_ids), min_size=1, max_size=3),
        st.lists(st.sampled_from(vocab.special_ids), min_size=1, max_size=2),
    )


def _well_formed_segments() -> st.SearchStrategy[list[int]]:
    """Segments that leave no character broken: the one-piece decode is clean text."""
    return st.one_of(
        TEXT.filter(lambda text: REPLACEMENT_CHAR not in text).map(_encode),
        st.lists(SPELT_CHARS.filter(lambda c: c != REPLACEMENT_CHAR), min_size=1, max_size=4).map(
            lambda chars: _byte_run("".join(chars).encode())
        ),
        st.lists(st.sampled_from(vocabulary().special_ids), min_size=1, max_size=2),
    )


def _concatenated(segments: st.SearchStrategy[list[int]]) -> st.SearchStrategy[list[int]]:
    return st.lists(segments, max_size=8).map(lambda parts: list(itertools.chain(*parts)))


TOKEN_IDS = st.deferred(lambda: _concatenated(_segments()))
WELL_FORMED_IDS = st.deferred(lambda: _concatenated(_well_formed_segments()))


# -- properties ----------------------------------------------------------------------------

# The first draw loads the tokenizer (about a second), which the health check would flag.


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.one_of(TOKEN_IDS, WELL_FORMED_IDS))
def test_streamed_pieces_reassemble_the_one_piece_decode(ids: list[int]) -> None:
    """Why: clients concatenate token events; any drift corrupts the text they show."""
    decoder = IncrementalDecoder(vocabulary().tokenizer)
    pieces = [decoder.push(token_id) for token_id in ids]
    pieces.append(decoder.flush())
    expected = one_piece(ids)
    event("one-piece decode has U+FFFD" if REPLACEMENT_CHAR in expected else "clean text")
    assert "".join(pieces).encode() == expected.encode()
    if REPLACEMENT_CHAR not in expected:
        assert not [piece for piece in pieces if REPLACEMENT_CHAR in piece]


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.one_of(TOKEN_IDS, WELL_FORMED_IDS))
def test_text_is_released_as_soon_as_it_is_complete_and_never_retracted(ids: list[int]) -> None:
    """Why: held-back text delays the stream; emitted text that changes later can't be fixed."""
    decoder = IncrementalDecoder(vocabulary().tokenizer)
    emitted = ""
    for count, token_id in enumerate(ids, start=1):
        emitted += decoder.push(token_id)
        so_far = one_piece(ids[:count])
        assert so_far.startswith(emitted)
        if not so_far.endswith(REPLACEMENT_CHAR):
            assert emitted == so_far
