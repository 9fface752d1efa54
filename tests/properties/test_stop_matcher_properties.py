"""Properties of `StopMatcher` for any text, stop strings and split into pushed chunks.

The matcher is fed as the decode loop feeds it (`generator.decode.rows`): one `push` per
chunk, empty chunks included, no push after a stop, `flush()` at the end when none
occurred. With up to 4 stop strings of 1..64 characters (what the API accepts), proven:

- `stopped` is reported exactly when the text contains a stop string, and by the push of
  the chunk that completes the first one, never later: generation ends on time;
- the output is the text before the cut and never contains a stop string, nor any part of
  the text after the cut: clients never see the stop string or what follows it;
- after a push that does not stop, the text held back is exactly the longest tail that
  could still grow into a stop string: the stream is delayed no more than necessary;
- when no stop string occurs strictly inside another (the usual case), the cut is the first
  occurrence of any stop string in the whole text, whatever the chunking, including a stop
  string split across chunks in every possible way;
- in general, the cut is the start of the stop string that completes first (the earliest
  end; on a tie, the longer stop), whatever the chunking: the output is the same as if the
  text came one character at a time, even when one stop string occurs inside another
  (stops ["abc", "b"]: "abc" in one push and "ab" then "c" both give "a").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from generator.decode.textstream import StopMatcher

MAX_STOPS = 4
MAX_STOP_CHARS = 64

# A tiny alphabet makes stop strings occur, overlap and nearly match; the others add
# multi-byte characters, whitespace and anything Unicode has.
ALPHABETS = st.sampled_from(
    [
        st.sampled_from("ab"),
        st.sampled_from("ab\n. é🙂"),
        st.characters(codec="utf-8"),
    ]
)


@dataclass(frozen=True)
class Scenario:
    text: str
    stops: list[str]
    chunks: list[str]


@st.composite
def chunkings(draw: st.DrawFn, text: str) -> list[str]:
    """`text` split at any positions, empty chunks included."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 3)))
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    alphabet = draw(ALPHABETS)
    text = draw(st.text(alphabet, max_size=48))
    stop = st.one_of(
        st.text(alphabet, min_size=1, max_size=4),
        st.text(alphabet, min_size=1, max_size=MAX_STOP_CHARS),
    )
    if text:  # a piece of the text itself, so that stops do occur
        start = st.integers(0, len(text) - 1)
        stop = st.one_of(
            stop,
            start.flatmap(
                lambda i: st.integers(i + 1, min(len(text), i + MAX_STOP_CHARS)).map(
                    lambda j: text[i:j]
                )
            ),
        )
    stops = draw(st.lists(stop, min_size=1, max_size=MAX_STOPS))
    if len(stops) < MAX_STOPS and len(stops[0]) >= 3 and draw(st.booleans()):
        # A piece from inside another stop: overlapping stops, the hard case.
        inner = stops[0][1:-1]
        i = draw(st.integers(0, len(inner) - 1))
        stops.append(inner[i : draw(st.integers(i + 1, len(inner)))])
    return Scenario(text, stops, draw(chunkings(text)))


@dataclass
class Run:
    pieces: list[str] = field(default_factory=list)  # what each push (and flush) returned
    stopped_at: int | None = None  # index of the chunk whose push reported the stop
    # After each push that did not stop: (text pushed so far, text emitted so far).
    progress: list[tuple[str, str]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.pieces)


def feed(stops: list[str], chunks: list[str]) -> Run:
    """Drive a matcher the way the decode loop does."""
    matcher, run, pushed = StopMatcher(stops), Run(), ""
    for index, chunk in enumerate(chunks):
        piece, stopped = matcher.push(chunk)
        run.pieces.append(piece)
        if stopped:
            run.stopped_at = index
            return run
        pushed += chunk
        run.progress.append((pushed, run.output))
    run.pieces.append(matcher.flush())
    return run


# -- references, written independently of the matcher ---------------------------------------


def first_start(text: str, stops: list[str]) -> int | None:
    """Where the first occurrence of any stop string begins."""
    starts = [text.find(stop) for stop in stops if stop in text]
    return min(starts) if starts else None


def first_complete_start(text: str, stops: list[str]) -> int | None:
    """Where the stop string that completes first begins (earliest end; tie: longest)."""
    hits = [(text.find(stop) + len(stop), text.find(stop)) for stop in stops if stop in text]
    return min(hits)[1] if hits else None


def first_end(text: str, stops: list[str]) -> int | None:
    """Where the first stop string to be complete ends (reading left to right)."""
    ends = [text.find(stop) + len(stop) for stop in stops if stop in text]
    return min(ends) if ends else None


def completing_chunk(chunks: list[str], end: int) -> int:
    """The index of the chunk whose push makes the text reach `end` characters."""
    total = 0
    for index, chunk in enumerate(chunks):
        total += len(chunk)
        if total >= end:
            return index
    raise AssertionError("the text is shorter than the stop's end")


def longest_partial_stop(text: str, stops: list[str]) -> int:
    """The length of the longest tail of `text` that is a proper prefix of a stop string."""
    sizes = (size for stop in stops for size in range(1, len(stop)) if text.endswith(stop[:size]))
    return max(sizes, default=0)


def has_inner_stop(stops: list[str]) -> bool:
    """Whether a stop string occurs strictly inside another (not touching either end)."""
    return any(inner in outer[1:-1] for outer in stops for inner in stops)


def check_common(scenario: Scenario, run: Run, cut: int | None) -> None:
    """What holds for every stop list: stop timing, output, hold-back."""
    text, stops = scenario.text, scenario.stops
    end = first_end(text, stops)
    if end is None:
        assert run.stopped_at is None
        assert run.output == text
    else:
        assert run.stopped_at == completing_chunk(scenario.chunks, end)
        assert cut is not None
        assert run.output == text[:cut]
    assert not [stop for stop in stops if stop in run.output]
    for pushed, emitted in run.progress:
        held = len(pushed) - len(emitted)
        assert pushed[: len(emitted)] == emitted
        assert held == longest_partial_stop(pushed, stops)


# -- properties ----------------------------------------------------------------------------


@settings(deadline=None, max_examples=250)
@given(scenario=scenarios())
def test_cut_is_the_first_stop_in_the_text_whatever_the_chunking(scenario: Scenario) -> None:
    """Why: the stream must end where the text first contains a stop, however it was tokenized."""
    assume(not has_inner_stop(scenario.stops))
    run = feed(scenario.stops, scenario.chunks)
    event("stopped" if run.stopped_at is not None else "no stop")
    check_common(scenario, run, first_start(scenario.text, scenario.stops))


@settings(deadline=None, max_examples=200)
@given(scenario=scenarios())
def test_cut_is_before_the_stop_that_completes_first(scenario: Scenario) -> None:
    """Why: pins the semantics for overlapping stop strings (any list the API accepts)."""
    run = feed(scenario.stops, scenario.chunks)
    event("inner stop" if has_inner_stop(scenario.stops) else "no inner stop")
    check_common(scenario, run, first_complete_start(scenario.text, scenario.stops))


@settings(deadline=None, max_examples=100)
@given(
    alphabet=ALPHABETS,
    data=st.data(),
    others=st.lists(st.text(st.sampled_from("xyz"), min_size=1, max_size=8), max_size=3),
)
def test_a_stop_split_across_chunks_in_every_possible_way_is_caught(
    alphabet: st.SearchStrategy[str], data: st.DataObject, others: list[str]
) -> None:
    """Why: tokens rarely align with stop strings; every split of one must still stop."""
    before = data.draw(st.text(alphabet, max_size=8), label="before")
    stop = data.draw(st.text(alphabet, min_size=1, max_size=6), label="stop")
    after = data.draw(st.text(alphabet, max_size=8), label="after")
    stops = [stop, *others]
    assume(not has_inner_stop(stops))
    text, start = before + stop + after, len(before)
    # Any chunk boundaries at or inside the stop string (2 ** (len(stop) + 1) splits).
    positions = range(start, start + len(stop) + 1)
    for mask in range(2 ** len(positions)):
        cuts = [p for bit, p in enumerate(positions) if mask >> bit & 1]
        bounds = [0, *cuts, len(text)]
        chunks = [text[i:j] for i, j in itertools.pairwise(bounds)]
        scenario = Scenario(text, stops, chunks)
        run = feed(stops, chunks)
        assert run.stopped_at is not None
        check_common(scenario, run, first_start(text, stops))


@settings(deadline=None, max_examples=100)
@example(scenario=Scenario("abc", ["abc", "b"], ["abc"]))
@given(scenario=scenarios())
def test_output_does_not_depend_on_the_chunking(scenario: Scenario) -> None:
    """Why: the same generated text must give the same output however the tokenizer split it;
    a character at a time is the finest split, where the first complete stop string wins."""
    by_chunk = feed(scenario.stops, scenario.chunks)
    by_char = feed(scenario.stops, list(scenario.text))
    assert (by_chunk.output, by_chunk.stopped_at is None) == (
        by_char.output,
        by_char.stopped_at is None,
    )
