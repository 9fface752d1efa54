"""One generation as a row of the decode batch: from sampled token ids to its stream events.

Everything that belongs to one request rather than to the shared forward pass lives
here: its `Sampler` (with its own seeded `torch.Generator`, so no other row draws
from its random numbers, and the token history the repetition penalty needs), the
incremental detokenizer and stop matcher, the timings of its `done` event, and the
`emit`/`cancel` pair that connects it to the request's stream.

The scheduler thread drives every method; `cancel` is the only thing another thread
touches (the request's coroutine sets it when the client goes away).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from generator.decode.sampling import Sampler
from generator.decode.textstream import IncrementalDecoder, StopMatcher
from generator.metrics import GeneratorMetrics
from generator.weights.loaded import LoadedModel
from streamkit.errors import GenerationFailed
from streamkit.events import (
    DoneEvent,
    ErrorEvent,
    Event,
    FinishReason,
    Timings,
    TokenEvent,
    Usage,
)
from streamkit.generation import GenerationParams

log = logging.getLogger("generator.engine")  # the one log line per generation, as ever


@dataclass
class Job:
    """One accepted request, with what the route already worked out."""

    request: GenerationParams
    max_new_tokens: int
    arrived: float = field(default_factory=time.perf_counter)
    prompt_ids: list[int] | None = None


@dataclass
class Progress:
    """What the row measured, for the done event, metrics and the log line."""

    admitted: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None
    last_token: float | None = None
    finish_reason: FinishReason = "length"


class Row:
    def __init__(
        self,
        job: Job,
        lm: LoadedModel,
        metrics: GeneratorMetrics,
        emit: Callable[[Event], None],
        cancel: threading.Event,
    ) -> None:
        assert job.prompt_ids is not None, "the prompt is tokenized before a row exists"
        self.job = job
        self.prompt_ids = job.prompt_ids
        self.cancel = cancel
        self.progress = Progress(admitted=time.perf_counter(), prompt_tokens=len(job.prompt_ids))
        # The request's context (its request id), for log lines written by the scheduler.
        self.context = contextvars.copy_context()
        self.last_token = -1
        self._lm = lm
        self._metrics = metrics
        self._emit = emit
        self._sampler = Sampler(job.request, lm.device, job.prompt_ids)
        self._detokenizer = IncrementalDecoder(lm.tokenizer)
        self._stops = StopMatcher(job.request.stop)
        self._index = 0

    def sample(self, logits: torch.Tensor) -> int:
        """Pick this row's next token from its logits ([1, vocab])."""
        return self._sampler(logits)

    def push(self, token: int) -> bool:
        """Account for a sampled token and stream its text; True when the row is over
        (EOS, a stop string, `max_new_tokens`, or its client went away)."""
        self._count(token)
        if token in self._lm.eos_ids:
            self.progress.finish_reason = "eos"
            self._flush()
            return True
        text, stopped = self._stops.push(self._detokenizer.push(token))
        self._send(text)
        if stopped:
            self.progress.finish_reason = "stop"
            return True
        if self.progress.completion_tokens >= self.job.max_new_tokens:
            self._flush()
            return True
        return self.cancel.is_set()

    def finish(self, error: BaseException | None = None) -> None:
        """The row leaves the batch: its terminal event (none when cancelled), metrics,
        and the log line. Called exactly once."""
        usage, timings = self.summary()
        if error is not None:
            outcome = "error"
            self.context.run(log.error, "generation failed", exc_info=error)
            self._emit(ErrorEvent.from_error(GenerationFailed(f"generation failed: {error}")))
        elif self.cancel.is_set():
            outcome = "cancelled"
        else:
            outcome = self.progress.finish_reason
            self._emit(DoneEvent(finish_reason=outcome, usage=usage, timings=timings))
        self._metrics.requests.labels(outcome=outcome).inc()
        fields = {**usage.model_dump(), **timings.model_dump(), "finish_reason": outcome}
        self.context.run(log.info, "generation finished", extra={"fields": fields})

    def summary(self) -> tuple[Usage, Timings]:
        progress, now = self.progress, time.perf_counter()
        first = progress.first_token or now
        last = progress.last_token or now
        decode_s = last - first
        rate = (progress.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0
        usage = Usage(
            prompt_tokens=progress.prompt_tokens, completion_tokens=progress.completion_tokens
        )
        timings = Timings(
            queue_ms=round((progress.admitted - self.job.arrived) * 1000, 2),
            ttft_ms=round((first - self.job.arrived) * 1000, 2),
            total_ms=round((now - self.job.arrived) * 1000, 2),
            tokens_per_s=round(rate, 2),
        )
        return usage, timings

    def _count(self, token: int) -> None:
        now = time.perf_counter()
        progress = self.progress
        if progress.last_token is None:
            progress.first_token = now
            self._metrics.ttft.observe(now - self.job.arrived)
        else:
            self._metrics.inter_token.observe(now - progress.last_token)
        progress.last_token = now
        progress.completion_tokens += 1
        self._metrics.completion_tokens.inc()
        self.last_token = token

    def _send(self, text: str) -> None:
        if text and not self.cancel.is_set():
            self._emit(TokenEvent(index=self._index, text=text))
            self._index += 1

    def _flush(self) -> None:
        """The end of the text: what the detokenizer and stop matcher still hold back."""
        text, stopped = self._stops.push(self._detokenizer.flush())
        self._send(text)
        if stopped:
            self.progress.finish_reason = "stop"
        else:
            self._send(self._stops.flush())
