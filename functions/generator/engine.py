"""The engine: owns the loaded model, admits requests, and streams events for each.

Each admitted generation runs its blocking token loop on a worker thread (never on
the event loop) and hands events to the request's coroutine through an asyncio
queue. When the client goes away the coroutine is cancelled; its `finally` sets the
generation's stop flag, which the loop checks before every forward pass, and the
worker frees the slot the moment it stops computing.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from generator.admission import Admission, Ticket
from generator.metrics import GeneratorMetrics
from generator.model import LoadedModel, decode, encode_prompt, timed_load
from generator.protocol import (
    FinishReason,
    GenerateRequest,
    Timings,
    Usage,
    done_event,
    error_event,
    status_event,
    token_event,
)
from generator.sampling import Sampler
from generator.settings import Settings
from generator.textstream import IncrementalDecoder, StopMatcher
from streamkit.errors import GenerationFailed, ModelUnavailable, ServiceError

log = logging.getLogger("generator.engine")

Event = dict[str, Any]


@dataclass
class Job:
    """One accepted request, with what the route already worked out."""

    request: GenerateRequest
    max_new_tokens: int
    arrived: float = field(default_factory=time.perf_counter)
    prompt_ids: list[int] | None = None


@dataclass
class _Progress:
    """What the worker measured, for the done event, metrics and the log line."""

    admitted: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None
    last_token: float | None = None
    finish_reason: FinishReason = "length"


class Engine:
    def __init__(self, settings: Settings, metrics: GeneratorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admission = Admission(
            settings.max_concurrency, settings.max_queue, settings.retry_after_s
        )
        metrics.queue_depth.set_function(lambda: self.admission.queue_depth)
        self._lm: LoadedModel | None = None
        self._load_error: ModelUnavailable | None = None
        self._loaded = threading.Event()
        self._load_lock = threading.Lock()
        self._load_started = False

    # -- model lifecycle -------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._lm is not None

    @property
    def loaded(self) -> LoadedModel:
        """The loaded model (only once `ready`)."""
        assert self._lm is not None, "model not loaded"
        return self._lm

    @property
    def load_error(self) -> ModelUnavailable | None:
        return self._load_error

    def start_loading(self) -> None:
        """Load the model on a background thread (idempotent), so the server answers
        health checks and can report `loading` while weights are mapped."""
        with self._load_lock:
            if self._load_started:
                return
            self._load_started = True
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def load(self) -> None:
        """Load the model on this thread (idempotent); used where start-up may block."""
        with self._load_lock:
            started = self._load_started
            self._load_started = True
        if started:
            self._loaded.wait()
        else:
            self._load()

    def _load(self) -> None:
        log.info("loading model", extra={"fields": {"model": self.settings.model}})
        try:
            self._lm, seconds = timed_load(self.settings)
        except Exception as exc:
            error = exc if isinstance(exc, ModelUnavailable) else None
            self._load_error = error or ModelUnavailable(f"model failed to load: {exc}")
            log.exception("model failed to load")
        else:
            self.metrics.model_ready.set(1)
            self.metrics.model_load_seconds.set(seconds)
            log.info(
                "model loaded",
                extra={
                    "fields": {
                        "model": self.settings.model,
                        "device": self._lm.device,
                        "load_s": round(seconds, 3),
                    }
                },
            )
        finally:
            self._loaded.set()

    def encode(self, job: Job) -> list[int]:
        """Tokenize the prompt (raises `InvalidRequest` when it doesn't fit)."""
        assert self._lm is not None
        return encode_prompt(self._lm, job.request.prompt, job.request.chat, job.max_new_tokens)

    # -- one generation ----------------------------------------------------------------

    async def stream(self, job: Job, ticket: Ticket) -> AsyncIterator[Event]:
        """Events for one admitted-or-queued request, ending with exactly one done/error
        (unless the consumer goes away first, which stops the work)."""
        handed_off = False
        try:
            heartbeat_s = self.settings.status_interval_s
            async for position in self.admission.wait(ticket, heartbeat_s):
                yield status_event("queued", position)
            while not self._loaded.is_set():
                yield status_event("loading")
                await asyncio.get_running_loop().run_in_executor(
                    None, self._loaded.wait, heartbeat_s
                )
            if self._load_error is not None:
                raise self._load_error
            if job.prompt_ids is None:
                job.prompt_ids = await asyncio.to_thread(self.encode, job)
            events: asyncio.Queue[Event] = asyncio.Queue()
            cancel = threading.Event()
            self._start_worker(job, events, cancel)
            handed_off = True
            try:
                while True:
                    event = await events.get()
                    yield event
                    if event["type"] in ("done", "error"):
                        return
            finally:
                cancel.set()
        except ServiceError as exc:
            self.metrics.requests.labels(outcome=exc.code).inc()
            yield error_event(exc.payload())
        finally:
            if not handed_off:
                self._give_back(ticket)

    def _give_back(self, ticket: Ticket) -> None:
        if ticket.admitted:
            self.admission.release()
        else:
            self.admission.abandon(ticket)

    def _start_worker(
        self, job: Job, events: asyncio.Queue[Event], cancel: threading.Event
    ) -> None:
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the consumer's event loop is gone: nobody to stream to
                cancel.set()

        context = contextvars.copy_context()  # keeps the request id in the worker's logs
        threading.Thread(
            target=context.run,
            args=(self._run, job, emit, cancel),
            name="generation",
            daemon=True,
        ).start()

    def _run(
        self,
        job: Job,
        emit: Callable[[Event], None],
        cancel: threading.Event,
    ) -> None:
        """The blocking side of one generation (worker thread)."""
        progress = _Progress(admitted=time.perf_counter())
        self.metrics.active.inc()
        outcome = "error"
        try:
            self._generate(job, progress, emit, cancel)
            outcome = "cancelled" if cancel.is_set() else progress.finish_reason
            if outcome != "cancelled":
                emit(done_event(progress.finish_reason, *self._summary(job, progress)))
        except Exception as exc:
            log.exception("generation failed")
            emit(error_event(GenerationFailed(f"generation failed: {exc}").payload()))
        finally:
            self.metrics.active.dec()
            self.admission.release()
            self.metrics.requests.labels(outcome=outcome).inc()
            self._log(job, progress, outcome)

    def _generate(
        self, job: Job, progress: _Progress, emit: Callable[[Event], None], cancel: threading.Event
    ) -> None:
        lm = self.loaded
        assert job.prompt_ids is not None
        progress.prompt_tokens = len(job.prompt_ids)
        self.metrics.prompt_tokens.inc(progress.prompt_tokens)
        detokenizer = IncrementalDecoder(lm.tokenizer)
        stops = StopMatcher(job.request.stop)
        index = 0

        def send(text: str) -> None:
            nonlocal index
            if text and not cancel.is_set():
                emit(token_event(index, text))
                index += 1

        sampler = Sampler(job.request, lm.device)
        tokens = decode(
            lm, job.prompt_ids, job.max_new_tokens, sampler, cancel, self.metrics.decode_steps.inc
        )
        for token in tokens:
            self._count_token(job, progress)
            if token in lm.eos_ids:
                progress.finish_reason = "eos"
                break
            text, stopped = stops.push(detokenizer.push(token))
            send(text)
            if stopped:
                progress.finish_reason = "stop"
                return
        text, stopped = stops.push(detokenizer.flush())
        send(text)
        if stopped:
            progress.finish_reason = "stop"
        else:
            send(stops.flush())

    def _count_token(self, job: Job, progress: _Progress) -> None:
        now = time.perf_counter()
        if progress.last_token is None:
            progress.first_token = now
            self.metrics.ttft.observe(now - job.arrived)
        else:
            self.metrics.inter_token.observe(now - progress.last_token)
        progress.last_token = now
        progress.completion_tokens += 1
        self.metrics.completion_tokens.inc()

    def _summary(self, job: Job, progress: _Progress) -> tuple[Usage, Timings]:
        now = time.perf_counter()
        first = progress.first_token or now
        last = progress.last_token or now
        decode_s = last - first
        rate = (progress.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0
        usage = Usage(
            prompt_tokens=progress.prompt_tokens, completion_tokens=progress.completion_tokens
        )
        timings = Timings(
            queue_ms=round((progress.admitted - job.arrived) * 1000, 2),
            ttft_ms=round((first - job.arrived) * 1000, 2),
            total_ms=round((now - job.arrived) * 1000, 2),
            tokens_per_s=round(rate, 2),
        )
        return usage, timings

    def _log(self, job: Job, progress: _Progress, outcome: str) -> None:
        usage, timings = self._summary(job, progress)
        log.info(
            "generation finished",
            extra={
                "fields": {
                    **usage.model_dump(),
                    **timings.model_dump(),
                    "finish_reason": outcome,
                }
            },
        )
