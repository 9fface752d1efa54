"""Properties of `StartIdSigner`, the stateless signed ids of `POST /start`.

Proven for any secret, any ttl (>= 1 s, as settings allow), any issue time and any
JSON-like parameters (generation parameters with Unicode prompts, messages and stop lists,
and arbitrary nested JSON values):

- `issue` either returns an id of at most MAX_ID_CHARS characters that `verify` turns back
  into exactly the same parameters (same JSON, types included) for the ttl's whole seconds,
  or refuses with `InvalidRequest` on the prompt/messages field because the id would be too
  long for a URL: a start id never silently loses or alters a parameter;
- any alteration of a valid id (every truncation, every one-character deletion, every
  position with a flipped bit, random replacements, insertions, appended text) made of
  ASCII characters is refused with `InvalidRequest` on the `id` field, never accepted, never
  another exception: a client can't forge or edit its parameters (prompt, limits);
- an id verified at or after `now + ttl_s + 1` (the expiry is a whole second) raises
  `StartIdExpired`, and an id signed with another secret is refused with `InvalidRequest`
  even when it has expired (the signature is checked before anything in the payload is
  trusted).

Any character, ASCII or not, in an altered id is refused the same way: a non-ASCII id is
malformed (a 422 on `id`), never a 500; the expiry is rounded up, so an id issued at a
fractional time stays valid for at least the `ttl_s` seconds that `issue` promises.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import assume, event, example, given, settings
from hypothesis import strategies as st

from gateway.signing import MAX_ID_CHARS, StartIdExpired, StartIdSigner
from streamkit.errors import InvalidRequest
from streamkit.generation import MAX_SEED

# -- parameters ----------------------------------------------------------------------------

UNICODE_TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),  # emoji
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK
    ),
    max_size=80,
)
GENERATION_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "prompt": UNICODE_TEXT,
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["system", "user", "assistant"]), "content": UNICODE_TEXT}
            ),
            min_size=1,
            max_size=3,
        ),
        "max_new_tokens": st.integers(1, 4096),
        "temperature": st.floats(0.0, 2.0),
        "top_p": st.floats(0.0, 1.0, exclude_min=True),
        "top_k": st.integers(0, 1000),
        "repetition_penalty": st.floats(0.0, 10.0, exclude_min=True),
        "stop": st.lists(st.text(min_size=1, max_size=64), max_size=4),
        "seed": st.integers(0, MAX_SEED),
        "chat": st.booleans(),
    },
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
PARAMS = st.one_of(
    GENERATION_PARAMS, st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6)
)
SMALL_PARAMS = st.fixed_dictionaries({"prompt": st.text(max_size=40)}) | st.dictionaries(
    st.text(max_size=6), JSON_VALUES, max_size=3
)
SECRETS = st.binary(max_size=64)
TTLS = st.integers(1, 10**7)
# Issue times: the Unix epoch onwards, whole and fractional seconds.
NOWS = st.one_of(st.integers(0, 2**32), st.floats(0, 2.0**32))


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON documents, types included (1 vs 1.0 vs True, -0.0, key order)."""
    return json.dumps(a) == json.dumps(b)


# -- alterations of an id ------------------------------------------------------------------

BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Mostly what an id is made of, so that an alteration looks plausible; any ASCII besides.
ASCII_CHARS = st.one_of(st.sampled_from(BASE64URL + ".="), st.characters(max_codepoint=0x7F))
NON_ASCII_CHARS = st.characters(min_codepoint=0x80, codec="utf-8")


@dataclass(frozen=True)
class Alteration:
    kind: Literal["replace", "insert", "delete", "truncate", "append"]
    where: int  # a position, taken modulo the id's length
    text: str  # what goes in: its first character (replace, insert) or all of it (append)

    def apply(self, start_id: str) -> str:
        i = self.where % len(start_id)
        if self.kind == "replace":
            return start_id[:i] + self.text[0] + start_id[i + 1 :]
        if self.kind == "insert":
            i = self.where % (len(start_id) + 1)
            return start_id[:i] + self.text[0] + start_id[i:]
        if self.kind == "delete":
            return start_id[:i] + start_id[i + 1 :]
        if self.kind == "truncate":
            return start_id[:i]
        return start_id + self.text


def alterations(chars: st.SearchStrategy[str]) -> st.SearchStrategy[Alteration]:
    return st.builds(
        Alteration,
        kind=st.sampled_from(["replace", "insert", "delete", "truncate", "append"]),
        where=st.integers(0, 2**16),
        text=st.text(chars, min_size=1, max_size=8),
    )


def assert_refused(signer: StartIdSigner, start_id: str, *, now: float) -> None:
    with pytest.raises(InvalidRequest) as refused:
        signer.verify(start_id, now=now)
    assert refused.value.field == "id"
    assert type(refused.value) is InvalidRequest


# -- properties ----------------------------------------------------------------------------


@settings(deadline=None, max_examples=150)
@given(params=PARAMS, secret=SECRETS, ttl_s=TTLS, now=NOWS, data=st.data())
def test_issue_round_trips_or_refuses_an_id_too_long_for_a_url(
    params: dict[str, Any], secret: bytes, ttl_s: int, now: float, data: st.DataObject
) -> None:
    """Why: the generator must run exactly the parameters that were validated at /start."""
    signer = StartIdSigner(secret, ttl_s)
    try:
        start_id = signer.issue(params, now=now)
    except InvalidRequest:
        event("too long for a start id")
        with pytest.raises(InvalidRequest, match="too long to fit a start id") as refused:
            signer.issue(params, now=now)
        assert refused.value.field == ("messages" if "messages" in params else "prompt")
        return
    event("issued")
    assert len(start_id) <= MAX_ID_CHARS
    assert start_id.isascii()
    # Valid from `now` for ttl_s seconds, less at most the second lost to rounding.
    last = max(now, now + ttl_s - 1)  # (0.37 + 1) - 1 rounds below 0.37
    at = data.draw(st.floats(now, last) | st.sampled_from([now, last]))
    assert same_json(signer.verify(start_id, now=at), params)


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**32), size=st.integers(4600, 12000))
def test_parameters_too_big_for_a_url_are_refused_at_issue(seed: int, size: int) -> None:
    """Why: an id the gateway can't receive back must fail at /start, naming the field."""
    # Random hex does not compress below half its size: the id exceeds MAX_ID_CHARS.
    prompt = random.Random(seed).randbytes(size).hex()
    with pytest.raises(InvalidRequest) as refused:
        StartIdSigner(b"k", 60).issue({"prompt": prompt, "max_new_tokens": 5})
    assert refused.value.field == "prompt"
    messages = [{"role": "user", "content": prompt}]
    with pytest.raises(InvalidRequest) as refused:
        StartIdSigner(b"k", 60).issue({"messages": messages})
    assert refused.value.field == "messages"


@settings(deadline=None, max_examples=60)
@given(
    params=SMALL_PARAMS, secret=SECRETS, ttl_s=TTLS, now=NOWS, alteration=alterations(ASCII_CHARS)
)
def test_every_ascii_alteration_of_an_id_is_refused(
    params: dict[str, Any], secret: bytes, ttl_s: int, now: float, alteration: Alteration
) -> None:
    """Why: a client that edits its id (prompt, limits) must get a 422, never a run or a 500."""
    signer = StartIdSigner(secret, ttl_s)
    start_id = signer.issue(params, now=now)
    altered = alteration.apply(start_id)
    assume(altered != start_id)
    assert_refused(signer, altered, now=now)
    # And exhaustively for this id: every truncation, deletion and one-bit change.
    for i in range(len(start_id)):
        assert_refused(signer, start_id[:i], now=now)
        assert_refused(signer, start_id[:i] + start_id[i + 1 :], now=now)
        flipped = chr(ord(start_id[i]) ^ 1)
        assert_refused(signer, start_id[:i] + flipped + start_id[i + 1 :], now=now)


@settings(deadline=None, max_examples=100)
@given(
    params=SMALL_PARAMS,
    secret=SECRETS,
    ttl_s=TTLS,
    now=NOWS,
    late=st.one_of(st.just(0), st.floats(0, 1e9), st.integers(0, 10**9)),
)
@example(params={"prompt": "hi"}, secret=b"", ttl_s=1, now=0.5, late=0)
@example(params={"prompt": "hi"}, secret=b"", ttl_s=1, now=7, late=0)
def test_an_id_has_expired_within_a_second_after_now_plus_ttl(
    params: dict[str, Any], secret: bytes, ttl_s: int, now: float, late: float
) -> None:
    """Why: a leaked or bookmarked id must stop starting generations once its ttl is over.

    The expiry is a whole second rounded up (the id stays valid for its full ttl), so it
    ends at most one second after `now + ttl_s`."""
    signer = StartIdSigner(secret, ttl_s)
    start_id = signer.issue(params, now=now)
    with pytest.raises(StartIdExpired) as expired:
        signer.verify(start_id, now=now + ttl_s + 1 + late)
    assert expired.value.status_code == 410


@settings(deadline=None, max_examples=100)
@given(
    params=SMALL_PARAMS,
    secrets=st.lists(SECRETS, min_size=2, max_size=2, unique=True),
    ttl_s=TTLS,
    now=NOWS,
    later=st.one_of(st.just(0), st.floats(0, 1e9)),
)
def test_an_id_signed_with_another_secret_is_refused(
    params: dict[str, Any], secrets: list[bytes], ttl_s: int, now: float, later: float
) -> None:
    """Why: only this deployment's gateway may mint ids (a forged one must not even be read)."""
    ours, theirs = StartIdSigner(secrets[0], ttl_s), StartIdSigner(secrets[1], ttl_s)
    forged = theirs.issue(params, now=now)
    assert_refused(ours, forged, now=now)
    assert_refused(ours, forged, now=now + ttl_s + later)  # expired too: still "forged"
    # Their payload under our signature of something else is no better.
    version, payload, _ = forged.split(".")
    ours_id = ours.issue({"prompt": "mine"}, now=now)
    assert_refused(ours, f"{version}.{payload}.{ours_id.split('.')[2]}", now=now)


@settings(deadline=None, max_examples=50)
@given(params=SMALL_PARAMS, secret=SECRETS, alteration=alterations(NON_ASCII_CHARS))
@example(params={"prompt": "hi"}, secret=b"k", alteration=Alteration("append", 0, "é"))
def test_every_non_ascii_alteration_of_an_id_is_refused(
    params: dict[str, Any], secret: bytes, alteration: Alteration
) -> None:
    """Why: `GET /generate?id=` takes any percent-encoded text; bad input must be a 422."""
    signer = StartIdSigner(secret, 60)
    altered = alteration.apply(signer.issue(params, now=0))
    assume(altered != signer.issue(params, now=0))
    assert_refused(signer, altered, now=0)


@settings(deadline=None, max_examples=50)
@given(ttl_s=TTLS, now=NOWS, elapsed=st.floats(0, 1, exclude_max=True))
@example(ttl_s=1, now=0.5, elapsed=0.5)
def test_an_id_is_valid_for_the_whole_ttl(ttl_s: int, now: float, elapsed: float) -> None:
    """Why: `issue` promises validity "for `ttl_s` seconds from `now`"."""
    signer = StartIdSigner(b"k", ttl_s)
    at = now + elapsed * ttl_s
    assume(at < now + ttl_s)
    assert signer.verify(signer.issue({"prompt": "hi"}, now=now), now=at) == {"prompt": "hi"}
