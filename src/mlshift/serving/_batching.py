"""Adaptive micro-batching: concurrent requests answered by one model call.

Off by default. When on, each request is checked and turned into model input on its own
(:meth:`LoadedModel.prepare`), so a malformed request is answered 400 before it can join a
batch; the requests that pass wait in a queue, and the queue is predicted in one call.

A batch is predicted, whichever comes first:

- at the event loop's next turn once no request is still being read: requests that arrived
  together are predicted together, and a lone request waits for nothing;
- as soon as it holds ``max_batch_size`` rows;
- ``max_latency_ms`` after its first request joined (a request whose body is slow to arrive
  holds the others back at most that long).

Models predicted in a worker thread (user predictors) run one batch at a time; requests that
arrive meanwhile form the next batch. When the merged call fails, each request of the batch
is predicted again on its own, so that every caller gets its own answer or its own error and
never another request's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from mlshift.errors import ConfigError
from mlshift.serving._loaders import LoadedModel
from mlshift.serving._payload import Batch

__all__ = ["Batcher", "Batching"]

logger = logging.getLogger("mlshift.serving")

_T = TypeVar("_T")

#: ``max_latency_ms`` when only ``max_batch_size`` is given.
DEFAULT_MAX_LATENCY_MS = 5.0


@dataclass(frozen=True)
class Batching:
    """Adaptive micro-batching settings; see ``docs/serving.md``.

    Attributes:
        max_batch_size: The most rows one model call gets (``MLSHIFT_MAX_BATCH_SIZE``). 1, the
            default, turns batching off. A request with at least this many rows is predicted
            on its own.
        max_latency_ms: The longest a request waits for others to join its batch
            (``MLSHIFT_MAX_LATENCY_MS``, default 5).
    """

    max_batch_size: int = 1
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS

    def __post_init__(self) -> None:
        if isinstance(self.max_batch_size, bool) or not isinstance(self.max_batch_size, int):
            raise ConfigError(
                f"max_batch_size {self.max_batch_size!r} is not a whole number", field="max_batch_size"
            )
        if not 1 <= self.max_batch_size <= 100_000:
            raise ConfigError(
                f"max_batch_size {self.max_batch_size} is out of range",
                field="max_batch_size",
                hint="use 1 (off) to 100000; a few times the number of concurrent clients is typical",
            )
        latency = self.max_latency_ms
        if isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 < latency <= 10_000:
            raise ConfigError(
                f"max_latency_ms {latency!r} is out of range",
                field="max_latency_ms",
                hint="a number of milliseconds above 0 and at most 10000",
            )

    @property
    def enabled(self) -> bool:
        """Whether requests are batched at all."""
        return self.max_batch_size > 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Batching:
        """Off, unless ``MLSHIFT_MAX_BATCH_SIZE`` (and ``MLSHIFT_MAX_LATENCY_MS``) say otherwise.

        Raises:
            ConfigError: for a value that is not a number in range.
        """
        env = os.environ if environ is None else environ
        size = env.get("MLSHIFT_MAX_BATCH_SIZE", "").strip()
        latency = env.get("MLSHIFT_MAX_LATENCY_MS", "").strip()
        if size and not size.isdigit():
            raise ConfigError(
                f"MLSHIFT_MAX_BATCH_SIZE={size!r} is not a positive whole number",
                field="MLSHIFT_MAX_BATCH_SIZE",
                hint="unset it to turn batching off",
            )
        try:
            wait = float(latency) if latency else DEFAULT_MAX_LATENCY_MS
        except ValueError:
            raise ConfigError(
                f"MLSHIFT_MAX_LATENCY_MS={latency!r} is not a number of milliseconds",
                field="MLSHIFT_MAX_LATENCY_MS",
                hint=f"unset it for the default ({DEFAULT_MAX_LATENCY_MS:g})",
            ) from None
        return cls(max_batch_size=int(size) if size else 1, max_latency_ms=wait)


class _Waiting:
    """One request in the queue: its prepared input, its row count, where its answer goes."""

    __slots__ = ("future", "input", "rows")

    def __init__(self, input: Any, rows: int, future: asyncio.Future[list[Any]]) -> None:
        self.input = input
        self.rows = rows
        self.future = future


class Batcher:
    """The queue of one server's prediction routes (all of them share it).

    Lives on the event loop's thread: its counters and queue are only touched there, so they
    need no lock. ``lock`` is the one user predictors are called under.
    """

    def __init__(
        self, model: LoadedModel, settings: Batching, *, lock: threading.Lock, inline_max_rows: int
    ) -> None:
        self.model = model
        self.max_rows = settings.max_batch_size
        self.max_wait = settings.max_latency_ms / 1000
        self.settings = settings
        self.lock = lock
        self.inline_max_rows = inline_max_rows
        self.queue: deque[_Waiting] = deque()
        self.queued_rows = 0
        #: Requests whose body is still being read: they may yet join the batch.
        self.reading = 0
        #: Whether a batch is being predicted in a worker thread.
        self.running = False
        self.scheduled = False
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.batches = 0
        self.requests = 0
        self.rows = 0
        self.split = 0

    def accepts(self, batch: Batch, rows: int) -> bool:
        """Whether this request may join a batch.

        Requests with parameters, with a whole batch's worth of rows, or with more rows than
        are checked on the event loop (their checks run in a worker thread, as unbatched) are
        predicted on their own.
        """
        return batch.params is None and rows < self.max_rows and rows <= self.inline_max_rows

    async def read(self, body: Awaitable[_T]) -> _T:
        """Await a request's body, counted as a request that may still join the batch."""
        self.reading += 1
        try:
            return await body
        finally:
            self.reading -= 1
            if not self.reading and self.queue:
                self._soon()

    async def predict(self, batch: Batch) -> list[Any]:
        """This request's predictions, from a model call it may share with other requests.

        Raises:
            InvalidPayload: for a request that does not fit the model (it never joins a
                batch), or one the model refused.
            Exception: whatever the model raised on this request.
        """
        prepared, rows = self.model.prepare(batch)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.queue.append(_Waiting(prepared, rows, future))
        self.queued_rows += rows
        if not self.running:
            if self.queued_rows >= self.max_rows or not self.reading:
                self._soon()
            elif self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(self.max_wait, self._flush)
        return await future

    def stats(self) -> dict[str, Any]:
        """What ``GET /v1/metadata`` reports about batching."""
        return {
            "max_batch_size": self.max_rows,
            "max_latency_ms": self.settings.max_latency_ms,
            "batches": self.batches,
            "requests": self.requests,
            "rows": self.rows,
            "queued": len(self.queue),
            "split_batches": self.split,
        }

    def _soon(self) -> None:
        # At the loop's next turn: requests whose bodies arrived in this turn join first.
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.running or not self.queue:
            return
        taken: list[_Waiting] = []
        rows = 0
        while self.queue and (not taken or rows + self.queue[0].rows <= self.max_rows):
            waiting = self.queue.popleft()
            taken.append(waiting)
            rows += waiting.rows
        self.queued_rows -= rows
        self.batches += 1
        self.requests += len(taken)
        self.rows += rows
        inputs = [w.input for w in taken]
        if self.model.blocking or rows > self.inline_max_rows:
            self.running = True
            self.task = asyncio.get_running_loop().create_task(self._in_thread(taken, inputs))
            return
        _settle(taken, self._compute(inputs))
        if self.queue:
            self._soon()

    async def _in_thread(self, taken: list[_Waiting], inputs: list[Any]) -> None:
        try:
            outcomes = await anyio.to_thread.run_sync(self._compute_locked, inputs)
        except BaseException as exc:  # cancelled at shutdown: nobody is left to answer
            outcomes = [exc] * len(taken)
            raise
        finally:
            self.running = False
            _settle(taken, outcomes)
            if self.queue:
                self._soon()

    def _compute_locked(self, inputs: list[Any]) -> list[list[Any] | BaseException]:
        if self.model.blocking:
            with self.lock:
                return self._compute(inputs)
        return self._compute(inputs)

    def _compute(self, inputs: list[Any]) -> list[list[Any] | BaseException]:
        """One outcome per request: its predictions, or the exception that is its answer."""
        predict = self.model.predict_prepared
        try:
            return list(predict(inputs))
        except Exception as exc:
            if len(inputs) == 1:
                return [exc]
            # Whose fault it was is unknown: ask again one request at a time, so that each
            # caller gets its own answer and nobody another request's error.
            self.split += 1
            logger.warning(
                "a batch of %d requests failed (%s); predicting them one at a time",
                len(inputs),
                type(exc).__name__,
            )
        outcomes: list[list[Any] | BaseException] = []
        for one in inputs:
            try:
                outcomes.append(predict([one])[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def _settle(taken: list[_Waiting], outcomes: list[list[Any] | BaseException]) -> None:
    for waiting, outcome in zip(taken, outcomes, strict=True):
        if waiting.future.done():
            continue
        if isinstance(outcome, asyncio.CancelledError):
            waiting.future.cancel()
        elif isinstance(outcome, BaseException):
            waiting.future.set_exception(outcome)
        else:
            waiting.future.set_result(outcome)
