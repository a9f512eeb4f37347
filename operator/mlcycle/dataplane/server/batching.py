"""Adaptive micro-batching: concurrent requests share one predict call.

A request's rows wait in a queue; the queue is flushed at the end of the event-loop turn in
which it started (so whatever arrived together is predicted together, and a lone request
waits for nothing), or after `max_wait` when that is set, or at once when `max_batch_size`
rows are queued. Under light load batches are single requests; under heavy load they grow
up to the cap, because requests keep arriving while the previous predict runs.

Predict runs inline on the event loop: for the small tabular models this server is built
for, a thread hop costs more than the predict itself. Every caller gets its own rows of
the output back. A predict that raises fails only the requests that caused it: a failed
batch of several requests is retried one request at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlcycle.dataplane.server.signature import ModelInput


class PredictionError(Exception):
    """predict raised: the server answers 500 for these callers and keeps serving.

    The model's own exception is the cause; its text may quote a URL or a key, so it goes
    to the server's log, redacted, and never into a response.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# (delay in seconds, callback) -> handle; delay 0 means "at the end of this loop turn".
Scheduler = Callable[[float, Callable[[], None]], Cancellable]


def loop_scheduler(loop: asyncio.AbstractEventLoop) -> Scheduler:
    def schedule(delay: float, callback: Callable[[], None]) -> Cancellable:
        return loop.call_soon(callback) if delay <= 0 else loop.call_later(delay, callback)

    return schedule


@dataclass
class _Queued:
    model_input: ModelInput
    rows: int
    result: asyncio.Future[Any]


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


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[ModelInput], Any],
        schedule: Scheduler,
        *,
        max_batch_size: int,
        max_wait_seconds: float = 0.0,
        observe: Callable[[int, Any], None] | None = None,
    ) -> None:
        self._predict = predict
        self._schedule = schedule
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self._observe = observe
        self._queue: deque[_Queued] = deque()
        self._queued_rows = 0
        self._flush_handle: Cancellable | None = None
        # Cleared when a model's output turns out not to be one row per input row: such a
        # model is then always called one request at a time.
        self.splittable = True

    async def predict(self, model_input: ModelInput, rows: int) -> Any:
        """This caller's predictions, predicted together with whoever else is queued."""
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(model_input, rows, result))
        self._queued_rows += rows
        if self._queued_rows >= self.max_batch_size:
            self._flush_now()
        elif self._flush_handle is None:
            self._flush_handle = self._schedule(self.max_wait_seconds, self.flush)
        return await result

    def _flush_now(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()

    def flush(self) -> None:
        """Predict every queued request, at most max_batch_size rows per predict call."""
        self._flush_handle = None
        while self._queue:
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            while (
                self.splittable
                and self._queue
                and rows + self._queue[0].rows <= self.max_batch_size
            ):
                rows += self._queue[0].rows
                batch.append(self._queue.popleft())
            self._queued_rows -= rows
            self._run(batch)

    def _run(self, batch: list[_Queued]) -> None:
        live = [item for item in batch if not item.result.done()]  # callers gone are skipped
        if not live:
            return
        if len(live) == 1:
            self._run_alone(live[0])
            return
        try:
            output = self._predict(concatenate([item.model_input for item in live]))
        except Exception:
            for item in live:
                self._run_alone(item)
            return
        parts = split_rows(output, [item.rows for item in live])
        if parts is None:
            self.splittable = False
            for item in live:
                self._run_alone(item)
            return
        if self._observe is not None:
            self._observe(sum(item.rows for item in live), output)
        for item, part in zip(live, parts, strict=True):
            item.result.set_result(part)

    def _run_alone(self, item: _Queued) -> None:
        try:
            output = self._predict(item.model_input)
        except Exception as error:
            item.result.set_exception(PredictionError(error))
            return
        if self._observe is not None:
            self._observe(item.rows, output)
        item.result.set_result(output)
