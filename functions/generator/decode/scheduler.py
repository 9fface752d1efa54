"""The scheduler: one thread owns the model and decodes every running generation together.

Each iteration of its loop:

1. admits the rows submitted since the last one — each prompt is prefilled alone
   (batch 1), its first token sampled and streamed at once, and its KV cache joins
   the shared batch (`generator.decode.decoder.Batch`);
2. drops rows whose client went away (their `cancel` is set), before spending a
   forward pass on them;
3. runs one batched forward pass: the newest token of every row;
4. lets each row sample from its own logits (its own sampler and seed) and stream
   its text; rows that hit EOS, a stop string or `max_new_tokens` leave the batch.

A row leaving frees its admission slot at once (`release`), so a queued request
joins at the next iteration, mid-flight of the others. Failures stay as local as
they can: an error in one row's sampling or text handling ends that row with an
`error` event and the others carry on; only a failure of the shared forward pass
itself ends every row of that batch (each with an `error` event). Nothing kills the
loop: anything unexpected fails the rows involved and the loop goes on.

The thread runs while there is work and ends when there is none (the next `submit`
starts a new one), so an idle process holds no thread inside torch; at interpreter
exit the loop is stopped and joined, since a thread still inside torch while the
interpreter tears down aborts the process.

`generator_decode_steps_total` counts forward passes — one per prefill, one per
batched step however many rows it serves — so it stops growing when the last
client goes away.

Models whose KV cache cannot be merged (see `generator.decode.batch.mergeable`; the
native decoder's always can) get a
batch of their own per row: still one thread and one forward pass per row per
iteration, round robin, just without sharing.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from generator.decode.decoder import Batch
from generator.decode.rows import Row
from generator.metrics import GeneratorMetrics
from generator.weights.loaded import LoadedModel

log = logging.getLogger("generator.scheduler")


@dataclass
class _Lane:
    """A batch and its rows (row i of `rows` is row i of `batch`)."""

    batch: Batch
    rows: list[Row] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        lm: LoadedModel,
        metrics: GeneratorMetrics,
        release: Callable[[], None],
    ) -> None:
        self._lm = lm
        self._metrics = metrics
        self._release = release
        self._pending: list[Row] = []
        self._lanes: list[_Lane] = []
        self._lock = threading.Lock()
        # The loop runs while there is work and ends when there is none, so an idle
        # process holds no thread inside torch (the next `submit` starts a new one).
        self._thread: threading.Thread | None = None
        self._closed = False
        _schedulers.add(self)

    def submit(self, row: Row) -> None:
        """Hand an admitted row to the loop (any thread); it joins at the next iteration."""
        with self._lock:
            self._pending.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
                self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop after its current step and wait for it (at interpreter exit:
        a thread still inside torch while the interpreter tears down aborts the process)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _loop(self) -> None:
        with torch.inference_mode():
            while (pending := self._take_pending()) is not None:
                for row in pending:
                    self._admit(row)
                for lane in list(self._lanes):
                    try:
                        self._advance(lane)
                    except Exception as exc:  # never let the thread die
                        log.exception("decode step failed")
                        self._fail_lane(lane, exc)

    def _take_pending(self) -> list[Row] | None:
        """The newly submitted rows; None when there is nothing at all to do (or the
        process is exiting), and the thread ends."""
        with self._lock:
            if self._closed or (not self._pending and not self._lanes):
                self._thread = None
                return None
            rows, self._pending = self._pending, []
            return rows

    def _admit(self, row: Row) -> None:
        """Prefill a new row, stream its first token, and seat it in a batch."""
        self._metrics.active.inc()
        if row.cancel.is_set():
            self._retire(row)
            return
        self._metrics.prompt_tokens.inc(len(row.prompt_ids))
        try:
            self._metrics.decode_steps.inc()
            decoder = self._lm.decoder
            logits, cache = decoder.prefill(row.prompt_ids)
            if row.push(row.sample(logits)):
                self._retire(row)
                return
            length = len(row.prompt_ids)
            lane = self._shared_lane() if decoder.mergeable(cache, length) else None
            if lane is None:
                lane = _Lane(decoder.open_batch(cache, length))
                self._lanes.append(lane)
            lane.batch.add(cache, length)
            lane.rows.append(row)
        except Exception as exc:
            self._retire(row, exc)
            self._lanes = [lane for lane in self._lanes if lane.rows]

    def _shared_lane(self) -> _Lane | None:
        return next((lane for lane in self._lanes if lane.batch.shared), None)

    def _advance(self, lane: _Lane) -> None:
        """One decode step for every row of `lane`."""
        self._keep(lane, [i for i, row in enumerate(lane.rows) if not row.cancel.is_set()])
        if not lane.rows:
            return
        self._metrics.decode_steps.inc()
        logits = lane.batch.step([row.last_token for row in lane.rows])
        staying = []
        for i, row in enumerate(lane.rows):
            try:
                over = row.push(row.sample(logits[i : i + 1]))
            except Exception as exc:
                self._retire(row, exc)
                continue
            if over:
                self._retire(row)
            else:
                staying.append(i)
        self._keep(lane, staying, retired=True)

    def _keep(self, lane: _Lane, indices: list[int], retired: bool = False) -> None:
        """Keep only rows `indices` of `lane`; the others are retired (unless already)."""
        if len(indices) == len(lane.rows):
            return
        if not retired:
            kept = set(indices)
            for i, row in enumerate(lane.rows):
                if i not in kept:
                    self._retire(row)
        lane.rows = [lane.rows[i] for i in indices]
        lane.batch.keep(indices)
        if not lane.rows:
            self._lanes.remove(lane)

    def _fail_lane(self, lane: _Lane, error: BaseException) -> None:
        for row in lane.rows:
            self._retire(row, error)
        lane.rows = []
        if lane in self._lanes:
            self._lanes.remove(lane)

    def _retire(self, row: Row, error: BaseException | None = None) -> None:
        """A row leaves: its slot goes back to admission at once — before its terminal
        event, so a client that reads `done` and asks again finds the slot free."""
        self._metrics.active.dec()
        self._release()
        try:
            row.finish(error)
        except Exception:
            log.exception("finishing a generation failed")


_schedulers: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for scheduler in list(_schedulers):
        scheduler.close()
