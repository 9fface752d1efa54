"""Concurrent generations decode as rows of one batch: each row exactly as if alone.

float32 throughout, through transformers' modeling code (the tiny GPT-2, and the default
model with `DECODER=transformers`), so a row batched with others must produce the very
tokens it produces alone (in bfloat16 the padding a batch gives a row may change the
last bits there, see `generator.decode.batch`; the native decoder is bit for bit
batch-invariant in every precision: `test_native_decoder.py`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import torch

from devtools.metrics import metric
from devtools.processes import ServerProcess
from devtools.reference import decode_alone
from generator.decode.batch import DecodeBatch, TransformersDecoder, mergeable
from generator.decode.prompt import encode_prompt
from generator.decode.rows import Row
from generator.decode.sampling import Sampler
from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine, Job
from generator.serving.protocol import GenerateRequest, effective_max_new_tokens
from generator.settings import Settings
from generator.weights.loaded import load
from support.models import TINY_DECODER, build_tiny
from support.ndjson import streamed_text

Events = list[dict[str, Any]]

# Mixed parameters on purpose: every row of a batch samples with its own settings.
BODIES: list[dict[str, Any]] = [
    {"prompt": "Hello, world", "max_new_tokens": 120, "temperature": 0},
    {
        "prompt": "The weather",
        "chat": True,
        "max_new_tokens": 90,
        "temperature": 0.9,
        "top_p": 0.9,
        "seed": 7,
    },
    {
        "prompt": "A much longer prompt than the others, so that it is padded differently "
        "from every other row of the batch it joins",
        "max_new_tokens": 150,
        "temperature": 1.0,
        "top_k": 40,
        "repetition_penalty": 1.3,
        "seed": 11,
    },
    {"prompt": "Hi", "max_new_tokens": 60, "temperature": 0.7, "seed": 3},
]


# -- the batched forward pass, on the real model --------------------------------------


@pytest.fixture(scope="module")
def real_float32(default_model_dir):
    return load(Settings(model=str(default_model_dir), dtype="float32", decoder="transformers"))


def solo_greedy(lm, prompt: str, tokens: int) -> list[int]:
    ids = encode_prompt(lm, GenerateRequest(prompt=prompt), tokens)
    sampler = Sampler(GenerateRequest(prompt=prompt, temperature=0), lm.device, ids)
    return list(decode_alone(lm, ids, tokens, sampler))


@pytest.mark.real_model
@torch.inference_mode()
def test_rows_joining_and_leaving_decode_exactly_as_alone(real_float32):
    lm = real_float32
    decoder = lm.decoder
    assert isinstance(decoder, TransformersDecoder)
    # (prompt, joins at step, tokens): shorter and longer prompts than the batch so far.
    plan = [
        ("Once upon a time", 0, 16),
        ("def fibonacci(n):", 0, 5),
        ("The capital of France is Paris, and the capital of Germany is", 2, 8),
        ("Hi", 4, 14),
        ("List three colors:", 4, 6),
    ]
    expected = [solo_greedy(lm, prompt, tokens) for prompt, _, tokens in plan]
    batch = DecodeBatch(decoder.model, decoder.device, shared=True)
    rows: list[tuple[int, list[int]]] = []  # (plan index, tokens so far), in batch order
    prompt_lengths: dict[int, int] = {}
    finished: dict[int, list[int]] = {}
    step = 0
    while len(finished) < len(plan):
        for i, (prompt, joins_at, _) in enumerate(plan):
            if joins_at == step:
                ids = encode_prompt(lm, GenerateRequest(prompt=prompt), 64)
                logits, cache = decoder.prefill(ids)
                assert mergeable(cache, len(ids))
                batch.add(cache, len(ids))
                prompt_lengths[i] = len(ids)
                rows.append((i, [int(logits.argmax(-1))]))
        done = [r for r, (i, tokens) in enumerate(rows) if len(tokens) == len(expected[i])]
        finished.update(rows[r] for r in done)
        staying = [r for r in range(len(rows)) if r not in done]
        batch.keep(staying)
        rows = [rows[r] for r in staying]
        # Padding nobody needs is trimmed: the cache is exactly as long as the longest
        # row's prompt plus the tokens it has fed back.
        needed = [prompt_lengths[i] + len(tokens) - 1 for i, tokens in rows]
        assert batch.length == max(needed, default=0)
        if rows:
            logits = batch.step([tokens[-1] for _, tokens in rows])
            for r, (_, tokens) in enumerate(rows):
                tokens.append(int(logits[r].argmax(-1)))
        step += 1
    for i, tokens in finished.items():
        assert tokens == expected[i], plan[i][0]
    assert batch.size == 0


# -- streams through a real generator process -----------------------------------------


@pytest.fixture(scope="module")
def batch_server(tiny_model_dir):
    env = {"MODEL": str(tiny_model_dir), "DTYPE": "float32", "MAX_CONCURRENCY": "4"}
    with ServerProcess("generator.app:create_app", env) as server:
        yield server


async def collect(
    http: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    on_token: tuple[int, asyncio.Event] | None = None,
    leave_after: int | None = None,
) -> Events:
    """Stream one generation; set `on_token`'s event at that token; with `leave_after`,
    close the connection after that many tokens (a client going away)."""
    events: Events = []
    async with http.stream("POST", "/v1/generate", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line:
                continue
            events.append(json.loads(line))
            tokens = sum(e["type"] == "token" for e in events)
            if on_token and tokens == on_token[0]:
                on_token[1].set()
            if leave_after is not None and tokens == leave_after:
                break
    return events


@pytest.fixture(scope="module")
def solo_runs(batch_server) -> list[Events]:
    """Each body run alone (one after another): what every batched run must reproduce."""

    async def run_all() -> list[Events]:
        async with httpx.AsyncClient(base_url=batch_server.url, timeout=120) as http:
            return [await collect(http, body) for body in BODIES]

    return asyncio.run(run_all())


def assert_same_generation(batched: Events, alone: Events) -> None:
    assert batched[-1]["type"] == "done", batched[-1]
    assert streamed_text(batched) == streamed_text(alone)
    assert batched[-1]["finish_reason"] == alone[-1]["finish_reason"]
    assert batched[-1]["usage"] == alone[-1]["usage"]
    tokens = [e for e in batched if e["type"] == "token"]
    assert [e["index"] for e in tokens] == list(range(len(tokens)))


async def test_concurrent_streams_share_forward_passes_and_match_their_solo_runs(
    batch_server, solo_runs
):
    steps_before = metric(batch_server.url, "generator_decode_steps_total")
    async with httpx.AsyncClient(base_url=batch_server.url, timeout=120) as http:
        runs = await asyncio.gather(*(collect(http, body) for body in BODIES))
    steps = metric(batch_server.url, "generator_decode_steps_total") - steps_before
    for batched, alone in zip(runs, solo_runs, strict=True):
        assert_same_generation(batched, alone)
        assert not any(e["type"] == "status" for e in batched)  # 4 slots: nobody queued
    # Alone, every token but the last costs one forward pass (plus one prefill each);
    # batched, the rows share them.
    alone_steps = sum(run[-1]["usage"]["completion_tokens"] for run in solo_runs)
    assert steps < alone_steps


async def test_streams_joining_mid_flight_match_their_solo_runs(batch_server, solo_runs):
    long_body = {**BODIES[0], "max_new_tokens": 400}
    async with httpx.AsyncClient(base_url=batch_server.url, timeout=120) as http:
        alone_long = await collect(http, long_body)
        tenth = asyncio.Event()
        first = asyncio.create_task(collect(http, long_body, on_token=(10, tenth)))
        await tenth.wait()
        # The long prompt joins a batch whose cache is shorter than it, "Hi" one
        # whose cache is longer: both ways of padding.
        joined = await asyncio.gather(collect(http, BODIES[2]), collect(http, BODIES[3]))
        assert not first.done()
        running = await first
    assert_same_generation(running, alone_long)
    assert_same_generation(joined[0], solo_runs[2])
    assert_same_generation(joined[1], solo_runs[3])


async def test_cancelling_one_stream_leaves_the_others_complete_and_correct(
    batch_server, solo_runs
):
    cancelled_before = _outcome(batch_server, "cancelled")
    async with httpx.AsyncClient(base_url=batch_server.url, timeout=120) as http:
        left, *others = await asyncio.gather(
            collect(http, {**BODIES[2], "max_new_tokens": 400}, leave_after=5),
            collect(http, BODIES[0]),
            collect(http, BODIES[1]),
        )
    assert sum(e["type"] == "token" for e in left) == 5
    assert_same_generation(others[0], solo_runs[0])
    assert_same_generation(others[1], solo_runs[1])
    # The row that lost its client left the batch: counted as cancelled, and nothing
    # is computing once the others are done.
    await _eventually(lambda: _outcome(batch_server, "cancelled") == cancelled_before + 1)
    await _eventually(lambda: metric(batch_server.url, "generator_active_generations") == 0)
    settled = metric(batch_server.url, "generator_decode_steps_total")
    await asyncio.sleep(0.5)
    assert metric(batch_server.url, "generator_decode_steps_total") == settled


async def test_stop_strings_end_only_their_own_row(batch_server, solo_runs):
    full = streamed_text(solo_runs[1])
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    async with httpx.AsyncClient(base_url=batch_server.url, timeout=120) as http:
        stopped, other = await asyncio.gather(
            collect(http, {**BODIES[1], "stop": [stop]}), collect(http, BODIES[0])
        )
    assert stopped[-1]["finish_reason"] == "stop"
    assert streamed_text(stopped) == full[: full.index(stop)]
    assert_same_generation(other, solo_runs[0])


def _outcome(server: ServerProcess, outcome: str) -> float:
    try:
        return metric(server.url, "generator_requests_total", outcome=outcome)
    except LookupError:  # no request has had this outcome yet
        return 0.0


async def _eventually(check, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


# -- failures stay with their row (the real engine, in-process, with a fault injected) --


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    settings = Settings(model=str(tiny_model_dir), dtype="float32", max_concurrency=4)
    engine = Engine(settings, GeneratorMetrics())
    engine.load()
    assert engine.ready, engine.load_error
    return engine


async def run(engine: Engine, body: dict[str, Any]) -> Events:
    request = GenerateRequest(**body)
    job = Job(request=request, max_new_tokens=effective_max_new_tokens(request, engine.settings))
    job.prompt_ids = engine.encode(job)
    ticket = engine.admission.enter()
    # As the wire carries them, like the events `collect` reads from the server.
    return [event.model_dump(exclude_none=True) async for event in engine.stream(job, ticket)]


async def test_a_failing_row_ends_only_its_own_stream(engine, monkeypatch):
    alone = [await run(engine, body) for body in BODIES[:2]]
    sample = Row.sample

    def failing_sample(self: Row, logits: torch.Tensor) -> int:
        if self.job.request.prompt == "doomed" and self.progress.completion_tokens == 3:
            raise RuntimeError("sampling broke")
        return sample(self, logits)

    monkeypatch.setattr(Row, "sample", failing_sample)
    doomed = {"prompt": "doomed", "max_new_tokens": 50, "temperature": 0.8, "seed": 1}
    failed, *others = await asyncio.gather(
        run(engine, doomed), *(run(engine, b) for b in BODIES[:2])
    )
    # At most its 3 tokens (text may still be held back), then its one terminal event.
    assert [e["type"] for e in failed[:-1]] == ["token"] * (len(failed) - 1)
    assert len(failed) - 1 <= 3
    assert failed[-1]["type"] == "error"
    assert failed[-1]["code"] == "generation_failed"
    assert "sampling broke" in failed[-1]["message"]
    for batched, solo in zip(others, alone, strict=True):
        assert_same_generation(batched, solo)


async def test_a_failed_forward_pass_ends_its_rows_with_errors_and_decoding_goes_on(
    engine, monkeypatch
):
    def broken_step(self: DecodeBatch, tokens: list[int]) -> torch.Tensor:
        raise RuntimeError("forward pass broke")

    monkeypatch.setattr(DecodeBatch, "step", broken_step)
    runs = await asyncio.gather(*(run(engine, body) for body in BODIES[:3]))
    for events in runs:
        assert events[-1]["type"] == "error"
        assert "forward pass broke" in events[-1]["message"]
    monkeypatch.undo()
    # Every slot came back and the scheduler still runs.
    again = await asyncio.wait_for(
        asyncio.gather(*(run(engine, body) for body in BODIES)), timeout=120
    )
    assert all(events[-1]["type"] == "done" for events in again)
    assert engine.metrics.registry.get_sample_value("generator_active_generations") == 0


# -- models whose cache cannot be merged still run concurrently, one row per batch ----


@pytest.fixture(scope="module")
def sliding_window_engine(tmp_path_factory) -> Engine:
    """A tiny random Mistral with sliding-window attention: its cache layers keep only
    the last window of tokens, a layout rows cannot be stacked in."""
    target = build_tiny(
        tmp_path_factory.mktemp("tiny-sliding-window"),
        "Mistral",
        sliding_window=16,
        max_position_embeddings=1024,
        **TINY_DECODER,
    )
    settings = Settings(model=str(target), dtype="float32", max_concurrency=3)
    engine = Engine(settings, GeneratorMetrics())
    engine.load()
    assert engine.ready, engine.load_error
    return engine


async def test_rows_whose_cache_cannot_be_merged_run_side_by_side(sliding_window_engine):
    engine = sliding_window_engine
    lm = engine.loaded
    with torch.inference_mode():
        _, cache = lm.decoder.prefill([1, 2, 3])
    assert not mergeable(cache, 3)
    bodies = BODIES[:3]
    alone = [await run(engine, body) for body in bodies]
    registry = engine.metrics.registry
    before = registry.get_sample_value("generator_decode_steps_total")
    together = await asyncio.gather(*(run(engine, body) for body in bodies))
    for batched, solo in zip(together, alone, strict=True):
        assert_same_generation(batched, solo)
    # Nothing shared: one prefill plus one step per further token, for every row.
    tokens = sum(events[-1]["usage"]["completion_tokens"] for events in together)
    assert registry.get_sample_value("generator_decode_steps_total") - before == tokens
