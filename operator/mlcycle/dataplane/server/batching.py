"""Predict off the event loop, one request per call or, for row-independent models, merged.

Predicts run in a worker thread (`run`): probes, metrics and new connections are answered
within milliseconds while a slow model computes. The one exception is a predict whose
measured cost fits a small budget (`inline`, predict_cost.py): a thread hop would cost more
than the predict itself, so it runs on the loop, which then waits at most that budget. At
most `concurrency` predicts run at once (one by default: a pyfunc model need not be
thread-safe); requests arriving meanwhile wait in a queue, in order.

When the model is row-independent (each output row depends on its input row alone, as for
scikit-learn, xgboost, lightgbm and onnx predict, or as the user declares), queued requests
are merged into one predict call of at most `max_batch_size` rows: whatever arrived in the
same event-loop turn (so a lone request waits for nothing), or within `max_wait` when that
is set, or while the previous predict ran. Under light load batches are single requests;
under heavy load they grow up to the cap. Any other model is called with exactly one
caller's rows, as `mlflow models serve` would: a model computing across its whole input
must never see another caller's rows.

Every caller gets its own rows of the output back. A merged predict that raises, or whose
output is not one row per input row, is redone one request at a time, so a bad request
fails alone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from mlcycle.dataplane.server.predict_cost import PredictCost
from mlcycle.dataplane.server.validation import ModelInput

T = TypeVar("T")


class PredictionError(Exception):
    """predict raised: the server answers 500 for these callers and keeps serving.

    The model's own exception is the cause; its text may quote a URL or a key, so it goes
    to the server's log, redacted, and never into a response.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class PredictionTimeoutError(Exception):
    """The prediction did not come within the request timeout: answered 504."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# (delay in seconds, callback) -> handle; delay 0 means "at the end of this loop turn".
Scheduler = Callable[[float, Callable[[], None]], Cancellable]
# Runs a blocking job away from the event loop (a thread pool) and awaits its result.
Runner = Callable[[Callable[[], Any]], Awaitable[Any]]
Predict = Callable[..., Any]
Observe = Callable[[int, Any], None]


def loop_scheduler(loop: asyncio.AbstractEventLoop) -> Scheduler:
    def schedule(delay: float, callback: Callable[[], None]) -> Cancellable:
        return loop.call_soon(callback) if delay <= 0 else loop.call_later(delay, callback)

    return schedule


@dataclass
class _Queued:
    model_input: ModelInput
    rows: int
    params: dict[str, Any] | None
    result: asyncio.Future[Any]

    @property
    def mergeable(self) -> bool:
        # Requests with their own params cannot share a predict call with others.
        return self.params is None


@dataclass(frozen=True)
class _Outcome:
    value: Any = None
    error: BaseException | None = None
    rows: int = 0
    output: Any = None
    """The whole output of the predict call this caller took part in, for metrics."""


class Deadlines:
    """Fails callers whose prediction did not come in time, with one timer for all of them.

    A timer per request (asyncio.wait_for, or call_later) costs a task or a heap entry for
    every request, most of them answered long before; deadlines come in the order requests
    arrive, so one timer for the oldest pending one is enough.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._pending: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, result: asyncio.Future[Any]) -> None:
        # Answered callers leave from the front as new ones come: the queue stays as long
        # as what is really pending (and whatever arrived behind the oldest of those).
        while self._pending and self._pending[0][1].done():
            self._pending.popleft()
        self._pending.append((loop.time() + self.seconds, result))
        if self._timer is None:
            self._timer = loop.call_at(self._pending[0][0], self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        while self._pending and (self._pending[0][0] <= now or self._pending[0][1].done()):
            _, result = self._pending.popleft()
            if not result.done():
                message = f"no prediction within {self.seconds:g}s"
                result.set_exception(PredictionTimeoutError(message))
        if self._pending:
            self._timer = loop.call_at(self._pending[0][0], self._expire, loop)


def concatenate(inputs: list[ModelInput]) -> ModelInput:
    first = inputs[0]
    if isinstance(first, np.ndarray):
        return np.concatenate(inputs)  # type: ignore[arg-type]
    if isinstance(first, pd.DataFrame):
        return pd.concat(inputs, ignore_index=True)
    return {key: np.concatenate([part[key] for part in inputs]) for key in first}


def split_rows(output: Any, sizes: list[int]) -> list[Any] | None:
    """Each caller's rows of a batch output; None when the output is not one row per input row."""
    total = sum(sizes)
    if isinstance(output, dict):
        parts = {key: split_rows(value, sizes) for key, value in output.items()}
        if any(part is None for part in parts.values()):
            return None
        return [{key: part[i] for key, part in parts.items()} for i in range(len(sizes))]  # type: ignore[index]
    if isinstance(output, np.ndarray | list | pd.Series | pd.DataFrame):
        if (isinstance(output, np.ndarray) and output.ndim == 0) or len(output) != total:
            return None
        slices: list[Any] = []
        start = 0
        for size in sizes:
            part = output[start : start + size]
            if isinstance(part, pd.Series | pd.DataFrame):
                part = part.reset_index(drop=True)
            slices.append(part)
            start += size
        return slices
    return None


def _predict_alone(predict: Predict, item: _Queued) -> _Outcome:
    try:
        if item.params is None:
            output = predict(item.model_input)
        else:
            output = predict(item.model_input, params=item.params)
    except Exception as error:
        return _Outcome(error=PredictionError(error))
    return _Outcome(value=output, rows=item.rows, output=output)


def predict_batch(predict: Predict, batch: list[_Queued]) -> tuple[list[_Outcome], bool]:
    """Runs in the worker thread: each caller's outcome, and whether the merge held.

    The second value is False when a merged output was not one row per input row: such a
    model is not row-independent after all and is never merged again.
    """
    if len(batch) == 1:
        return [_predict_alone(predict, batch[0])], True
    try:
        output = predict(concatenate([item.model_input for item in batch]))
    except Exception:
        return [_predict_alone(predict, item) for item in batch], True
    parts = split_rows(output, [item.rows for item in batch])
    if parts is None:
        return [_predict_alone(predict, item) for item in batch], False
    rows = sum(item.rows for item in batch)
    outcomes = [_Outcome(value=part) for part in parts]
    outcomes[0] = _Outcome(value=parts[0], rows=rows, output=output)  # observed once
    return outcomes, True


class MicroBatcher:
    def __init__(
        self,
        predict: Predict,
        schedule: Scheduler,
        run: Runner,
        *,
        merge: bool,
        max_batch_size: int,
        max_wait_seconds: float = 0.0,
        concurrency: int = 1,
        observe: Observe | None = None,
        inline: PredictCost | None = None,
    ) -> None:
        self._predict = predict
        self._schedule = schedule
        self._run = run
        self.merge = merge
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.concurrency = concurrency
        self._observe = observe
        self.inline = inline
        self._queue: deque[_Queued] = deque()
        self._queued_rows = 0
        self._running = 0
        self._flush_handle: Cancellable | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._deadlines: Deadlines | None = None

    async def predict(
        self,
        model_input: ModelInput,
        rows: int,
        params: dict[str, Any] | None = None,
        within_seconds: float | None = None,
    ) -> Any:
        """This caller's predictions; raises PredictionError when the model raised on them,
        PredictionTimeoutError when they did not come `within_seconds` (the predict
        itself goes on: a thread cannot be stopped)."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()
        if within_seconds is not None:
            deadlines = self._deadlines
            if deadlines is None or deadlines.seconds != within_seconds:
                deadlines = self._deadlines = Deadlines(within_seconds)
            deadlines.watch(loop, result)
        self._queue.append(_Queued(model_input, rows, params, result))
        self._queued_rows += rows
        if self._running >= self.concurrency:
            pass  # the next batch starts when a running predict ends
        elif not self.merge or self._queued_rows >= self.max_batch_size:
            self._flush_now()
        elif self._flush_handle is None:
            self._flush_handle = self._schedule(self.max_wait_seconds, self.flush)
        return await result

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _flush_now(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()

    def flush(self) -> None:
        """Start predicts for queued requests while fewer than `concurrency` run."""
        self._flush_handle = None
        while self._queue and self._running < self.concurrency:
            batch = self._next_batch()
            if not batch:
                continue
            if self.inline is not None and self.inline.fits(sum(item.rows for item in batch)):
                self._settle(batch, *self._timed(batch))
                continue
            self._running += 1
            task = asyncio.ensure_future(self._predict_batch(batch))
            self._tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._tasks.discard)

    def _next_batch(self) -> list[_Queued]:
        first = self._queue.popleft()
        self._queued_rows -= first.rows
        batch = [first]
        rows = first.rows
        while (
            self.merge
            and first.mergeable
            and self._queue
            and self._queue[0].mergeable
            and rows + self._queue[0].rows <= self.max_batch_size
        ):
            item = self._queue.popleft()
            self._queued_rows -= item.rows
            rows += item.rows
            batch.append(item)
        return [item for item in batch if not item.result.done()]  # callers gone are skipped

    def _timed(self, batch: list[_Queued]) -> tuple[list[_Outcome], bool]:
        started = time.perf_counter()
        outcome = predict_batch(self._predict, batch)
        if self.inline is not None:
            self.inline.observe(sum(item.rows for item in batch), time.perf_counter() - started)
        return outcome

    def _settle(self, batch: list[_Queued], outcomes: list[_Outcome], merge_held: bool) -> None:
        if not merge_held:
            self.merge = False
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome.output is not None and self._observe is not None:
                self._observe(outcome.rows, outcome.output)
            if item.result.done():  # timed out meanwhile
                continue
            if outcome.error is not None:
                item.result.set_exception(outcome.error)
            else:
                item.result.set_result(outcome.value)

    async def _predict_batch(self, batch: list[_Queued]) -> None:
        try:
            self._settle(batch, *await self._run(lambda: self._timed(batch)))
        except BaseException as error:  # the runner itself failed: nobody may hang
            for item in batch:
                if not item.result.done():
                    item.result.set_exception(PredictionError(error))
            if not isinstance(error, Exception):
                raise
        finally:
            self._running -= 1
            if self._queue:
                self.flush()
