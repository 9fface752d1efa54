"""Incremental detokenization and stop strings, against the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from generator.decode.textstream import REPLACEMENT_CHAR, IncrementalDecoder, StopMatcher

MULTIBYTE_TEXT = "Tea 🍵 at 東京, café — naïve 👩‍👩‍👧 façade ✓ Ωmega"


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def stream(tokenizer, ids):
    decoder = IncrementalDecoder(tokenizer)
    chunks = [decoder.push(i) for i in ids]
    chunks.append(decoder.flush())
    return [c for c in chunks if c]


def test_multibyte_characters_split_across_tokens_are_never_split_in_output(tokenizer):
    ids = tokenizer(MULTIBYTE_TEXT, add_special_tokens=False)["input_ids"]
    # The test is only meaningful if some character really spans several tokens.
    assert any(REPLACEMENT_CHAR in tokenizer.decode([i]) for i in ids)
    chunks = stream(tokenizer, ids)
    assert "".join(chunks) == MULTIBYTE_TEXT
    assert all(REPLACEMENT_CHAR not in chunk for chunk in chunks)


def test_concatenation_equals_one_piece_decode_even_for_broken_byte_sequences(tokenizer):
    ids = tokenizer(MULTIBYTE_TEXT, add_special_tokens=False)["input_ids"]
    emoji_bytes = [i for i in ids if tokenizer.decode([i]) == REPLACEMENT_CHAR]
    # Lone halves of characters, a dangling lead byte at the very end, special tokens.
    broken = [*ids[:3], emoji_bytes[0], *ids[3:9], tokenizer.eos_token_id, emoji_bytes[1]]
    one_piece = tokenizer.decode(
        broken, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert REPLACEMENT_CHAR in one_piece
    assert "".join(stream(tokenizer, broken)) == one_piece


def test_leading_spaces_survive_windowed_decoding(tokenizer):
    text = " Hello  world,\n  indented line\tand tab"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(stream(tokenizer, ids)) == text


def feed(matcher, pieces):
    out, stopped = [], False
    for piece in pieces:
        text, stopped = matcher.push(piece)
        out.append(text)
        if stopped:
            break
    if not stopped:
        out.append(matcher.flush())
    return "".join(out), stopped


@pytest.mark.parametrize(
    ("pieces", "stops", "expected", "stopped"),
    [
        (["Hello", " wor", "ld", " again"], ["world"], "Hello ", True),
        (["a", "b", "c"], ["bc"], "a", True),
        (["###"], ["#"], "", True),
        (["ab", "X", "cd"], ["abc"], "abXcd", False),  # partial match that never completes
        (["The end", "."], ["END"], "The end.", False),  # case-sensitive
        (["one\n\ntwo"], ["\n\n", "one"], "", True),  # earliest stop wins
        (["x", "y", "\n", "\nz"], ["\n\n"], "xy", True),
    ],
)
def test_stop_matcher(pieces, stops, expected, stopped):
    assert feed(StopMatcher(stops), pieces) == (expected, stopped)


def test_stop_matcher_holds_back_only_possible_stop_prefixes():
    matcher = StopMatcher(["STOP"])
    assert matcher.push("abcST") == ("abc", False)
    assert matcher.push("x") == ("STx", False)
