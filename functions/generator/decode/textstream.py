"""Token ids → text deltas, safe to stream.

Two small state machines the decode loop feeds one token at a time:

- `IncrementalDecoder` never emits text that ends inside a multi-byte character: a
  byte-level tokenizer may split "é" or "🙂" across tokens, and decoding such a
  prefix yields U+FFFD. It decodes a short window of recent ids (so each step is
  O(1), not O(n)) and holds text back while the window ends in U+FFFD. The
  concatenation of its deltas plus `flush()` equals decoding all ids at once.
- `StopMatcher` holds back any tail that could still become a stop string, cuts the
  text at the first complete stop string, and never emits the stop string itself.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDecoder:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        # Text of ids[_prefix:_read] has been emitted; ids[_read:] are pending.
        # Decoding from _prefix (not _read) keeps tokenizer context such as leading spaces.
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now complete (possibly "")."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHAR):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """The held-back remainder at the end of generation (a genuinely broken byte
        sequence stays U+FFFD here, exactly as a one-piece decode renders it)."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text) :]


class StopMatcher:
    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit, whether a stop string was hit).
        The text is cut before the stop string that completes first, as it would be if
        the text came one character at a time, so the cut never depends on how the text
        was split into tokens (a stop inside another stop completes first)."""
        buffer = self._pending + text
        hits = [(i + len(s), i) for s in self._stops if (i := buffer.find(s)) >= 0]
        if hits:
            self._pending = ""
            _, start = min(hits)  # the earliest end; on a tie, the longer stop
            return buffer[:start], True
        keep = self._longest_partial_stop(buffer)
        self._pending = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Text held back as a possible stop-string start, released at the end."""
        text, self._pending = self._pending, ""
        return text

    def _longest_partial_stop(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
