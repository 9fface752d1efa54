"""The engine: owns the loaded model, admits requests, and streams events for each.

Admitted generations become rows of one batch that a single scheduler thread decodes
together (`generator.decode.scheduler`), never on the event loop; each row hands its events
to the request's coroutine through an asyncio queue. When the client goes away the
coroutine is cancelled; its `finally` sets the row's stop flag, which the scheduler
checks before every forward pass, and the row's slot is freed the moment it leaves
the batch. Admission slots are batch rows: `MAX_CONCURRENCY` rows decode at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator

from generator.decode.prompt import encode_prompt
from generator.decode.rows import Job, Row
from generator.decode.scheduler import Scheduler
from generator.metrics import GeneratorMetrics
from generator.serving.admission import Admission, Ticket
from generator.settings import Settings
from generator.weights.loaded import LoadedModel, load
from streamkit.errors import ModelUnavailable, ServiceError
from streamkit.events import TERMINAL, ErrorEvent, Event, StatusEvent

log = logging.getLogger("generator.engine")

__all__ = ["Engine", "Job"]


class Engine:
    def __init__(self, settings: Settings, metrics: GeneratorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admission = Admission(
            settings.max_concurrency, settings.max_queue, settings.retry_after_s
        )
        metrics.queue_depth.set_function(lambda: self.admission.queue_depth)
        self._lm: LoadedModel | None = None
        self._scheduler: Scheduler | None = None
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
            started = time.perf_counter()
            lm = load(self.settings)
            seconds = time.perf_counter() - started
            self._scheduler = Scheduler(lm, self.metrics, self.admission.release)
            self._lm = lm
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
        """Tokenize the prompt or conversation (raises `InvalidRequest` when it doesn't fit)."""
        assert self._lm is not None
        return encode_prompt(self._lm, job.request, job.max_new_tokens)

    # -- one generation ----------------------------------------------------------------

    async def stream(self, job: Job, ticket: Ticket) -> AsyncIterator[Event]:
        """Events for one admitted-or-queued request, ending with exactly one done/error
        (unless the consumer goes away first, which stops the work)."""
        handed_off = False
        try:
            heartbeat_s = self.settings.status_interval_s
            async for position in self.admission.wait(ticket, heartbeat_s):
                yield StatusEvent(state="queued", position=position)
            while not self._loaded.is_set():
                yield StatusEvent(state="loading")
                await asyncio.get_running_loop().run_in_executor(
                    None, self._loaded.wait, heartbeat_s
                )
            if self._load_error is not None:
                raise self._load_error
            if job.prompt_ids is None:
                job.prompt_ids = await asyncio.to_thread(self.encode, job)
            events: asyncio.Queue[Event] = asyncio.Queue()
            cancel = threading.Event()
            self._submit(job, events, cancel)
            handed_off = True
            try:
                while True:
                    event = await events.get()
                    yield event
                    if isinstance(event, TERMINAL):
                        return
            finally:
                cancel.set()
        except ServiceError as exc:
            self.metrics.requests.labels(outcome=exc.code).inc()
            yield ErrorEvent.from_error(exc)
        finally:
            if not handed_off:
                self._give_back(ticket)

    def _give_back(self, ticket: Ticket) -> None:
        if ticket.admitted:
            self.admission.release()
        else:
            self.admission.abandon(ticket)

    def _submit(self, job: Job, events: asyncio.Queue[Event], cancel: threading.Event) -> None:
        """Seat the generation in the batch; the scheduler frees its slot when it leaves."""
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the consumer's event loop is gone: nobody to stream to
                cancel.set()

        assert self._scheduler is not None
        self._scheduler.submit(Row(job, self.loaded, self.metrics, emit, cancel))
