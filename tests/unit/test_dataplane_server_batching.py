"""Micro-batching on a manual clock and a manual worker thread: who is predicted together,
who waits, and who gets which rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlcycle.dataplane.server.batching import (
    Deadlines,
    MicroBatcher,
    PredictionError,
    PredictionTimeoutError,
    split_rows,
)

pytestmark = pytest.mark.unit


@dataclass
class Timer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class ManualClock:
    """Stands in for the event loop's call_soon/call_later: nothing runs until advanced."""

    now: float = 0.0
    timers: list[Timer] = field(default_factory=list)

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t.due <= self.now and not t.cancelled]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer.callback()


@dataclass
class RecordingModel:
    """Predicts ten times the first column; raises for negative inputs."""

    calls: list[int] = field(default_factory=list)

    def predict(self, batch: Any) -> Any:
        self.calls.append(len(batch))
        values = np.asarray(batch)[:, 0]
        if (values < 0).any():
            raise ValueError("negative input")
        return values * 10


@dataclass
class ManualThread:
    """Stands in for the predict thread: jobs run when released, in order."""

    held: bool = False
    waiting: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = field(default_factory=list)

    async def run(self, job: Callable[[], Any]) -> Any:
        if not self.held:
            return job()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((job, done))
        return await done

    def release_one(self) -> None:
        job, done = self.waiting.pop(0)
        done.set_result(job())


def batcher_for(
    predict: Callable[..., Any],
    clock: ManualClock,
    thread: ManualThread | None = None,
    *,
    merge: bool = True,
    max_batch_size: int = 64,
    **options: Any,
) -> MicroBatcher:
    return MicroBatcher(
        predict,
        clock.schedule,
        (thread or ManualThread()).run,
        merge=merge,
        max_batch_size=max_batch_size,
        **options,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def rows(*values: float) -> np.ndarray[Any, Any]:
    return np.array([[value, 0.0] for value in values])


def test_concurrent_callers_share_one_predict_and_get_their_own_rows() -> None:
    async def scenario() -> None:
        clock, model = ManualClock(), RecordingModel()
        batcher = batcher_for(model.predict, clock)
        requests = [rows(1), rows(2, 3), rows(4), rows(5, 6, 7)]
        callers = [asyncio.ensure_future(batcher.predict(r, len(r))) for r in requests]
        await settle()
        assert model.calls == []  # waiting for the end of the loop turn
        clock.advance(0)
        results = await asyncio.gather(*callers)
        assert model.calls == [7]
        assert [list(r) for r in results] == [[10], [20, 30], [40], [50, 60, 70]]

    asyncio.run(scenario())


def test_max_batch_size_caps_rows_per_call_and_flushes_at_once_when_full() -> None:
    async def scenario() -> None:
        clock, model = ManualClock(), RecordingModel()
        batcher = batcher_for(model.predict, clock, max_batch_size=4, max_wait_seconds=1.0)
        first = [asyncio.ensure_future(batcher.predict(rows(i, i), 2)) for i in (1, 2)]
        await settle()
        assert model.calls == [4]  # full: no wait for the clock
        results = await asyncio.gather(*first)
        assert [list(r) for r in results] == [[10, 10], [20, 20]]
        late = asyncio.ensure_future(batcher.predict(rows(3), 1))
        await settle()
        clock.advance(0.5)
        assert model.calls == [4]  # partial batch still waiting
        clock.advance(0.5)
        assert list(await late) == [30]
        assert model.calls == [4, 1]

    asyncio.run(scenario())


def test_a_failing_request_fails_alone_and_the_batcher_keeps_serving() -> None:
    async def scenario() -> None:
        clock, model = ManualClock(), RecordingModel()
        batcher = batcher_for(model.predict, clock)
        callers = [
            asyncio.ensure_future(batcher.predict(r, 1)) for r in (rows(1), rows(-1), rows(2))
        ]
        await settle()
        clock.advance(0)
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
        assert list(outcomes[0]) == [10]
        assert isinstance(outcomes[1], PredictionError)
        assert "ValueError: negative input" in str(outcomes[1])
        assert list(outcomes[2]) == [20]
        assert model.calls == [3, 1, 1, 1]  # the batch, then each request on its own
        again = asyncio.ensure_future(batcher.predict(rows(4), 1))
        await settle()
        clock.advance(0)
        assert list(await again) == [40]

    asyncio.run(scenario())


def test_outputs_not_one_row_per_input_row_make_the_model_unbatched() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        calls: list[int] = []

        def summarise(batch: Any) -> Any:
            calls.append(len(batch))
            return float(np.asarray(batch).sum())

        batcher = batcher_for(summarise, clock)
        callers = [asyncio.ensure_future(batcher.predict(rows(v), 1)) for v in (1, 2)]
        await settle()
        clock.advance(0)
        assert await asyncio.gather(*callers) == [1.0, 2.0]
        assert not batcher.merge
        assert calls == [2, 1, 1]

    asyncio.run(scenario())


def test_dataframes_are_concatenated_and_split_back() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        batcher = batcher_for(lambda frame: frame["x"] * 2, clock)
        frames = [pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]})]
        callers = [asyncio.ensure_future(batcher.predict(f, len(f))) for f in frames]
        await settle()
        clock.advance(0)
        first, second = await asyncio.gather(*callers)
        assert first.tolist() == [2, 4]
        assert second.tolist() == [6]
        assert list(second.index) == [0]

    asyncio.run(scenario())


def test_a_caller_that_went_away_is_not_predicted() -> None:
    async def scenario() -> None:
        clock, model = ManualClock(), RecordingModel()
        batcher = batcher_for(model.predict, clock)
        gone = asyncio.ensure_future(batcher.predict(rows(1), 1))
        stays = asyncio.ensure_future(batcher.predict(rows(2), 1))
        await settle()
        gone.cancel()
        await settle()
        clock.advance(0)
        assert list(await stays) == [20]
        assert model.calls == [1]

    asyncio.run(scenario())


def test_split_rows_handles_dicts_and_refuses_misaligned_outputs() -> None:
    parts = split_rows({"a": np.arange(3), "b": np.arange(3) * 2}, [1, 2])
    assert parts is not None
    assert parts[1]["b"].tolist() == [2, 4]
    assert split_rows(np.arange(4), [1, 2]) is None
    assert split_rows("text", [1]) is None


def centred(batch: Any) -> Any:
    """A batch-dependent model: each value minus the mean of the whole input."""
    values = np.asarray(batch)[:, 0]
    return values - values.mean()


def test_a_model_not_known_row_independent_is_called_with_one_callers_rows_only() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        calls: list[int] = []

        def predict(batch: Any) -> Any:
            calls.append(len(batch))
            return centred(batch)

        batcher = batcher_for(predict, clock, merge=False)
        mine, theirs = rows(1, 2, 3), rows(100, 200)
        callers = [asyncio.ensure_future(batcher.predict(r, len(r))) for r in (mine, theirs)]
        await settle()
        clock.advance(0)
        first, second = await asyncio.gather(*callers)
        assert first.tolist() == centred(mine).tolist() == [-1.0, 0.0, 1.0]
        assert second.tolist() == centred(theirs).tolist()
        assert calls == [3, 2]

    asyncio.run(scenario())


def test_requests_arriving_while_a_predict_runs_wait_and_form_the_next_batch() -> None:
    async def scenario() -> None:
        clock, model, thread = ManualClock(), RecordingModel(), ManualThread(held=True)
        batcher = batcher_for(model.predict, clock, thread)
        first = asyncio.ensure_future(batcher.predict(rows(1), 1))
        await settle()
        clock.advance(0)
        await settle()
        assert len(thread.waiting) == 1  # predicting, off the loop
        later = [asyncio.ensure_future(batcher.predict(rows(v), 1)) for v in (2, 3)]
        await settle()
        clock.advance(0)
        await settle()
        assert len(thread.waiting) == 1
        assert batcher.queued == 2
        thread.release_one()
        assert list(await first) == [10]
        await settle()
        thread.release_one()
        assert [list(r) for r in await asyncio.gather(*later)] == [[20], [30]]
        assert model.calls == [1, 2]

    asyncio.run(scenario())


def test_requests_with_params_are_never_merged_and_get_their_params() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        calls: list[tuple[int, Any]] = []

        def predict(batch: Any, params: dict[str, Any] | None = None) -> Any:
            calls.append((len(batch), params))
            return np.asarray(batch)[:, 0] * (params or {}).get("scale", 1)

        batcher = batcher_for(predict, clock)
        callers = [
            asyncio.ensure_future(batcher.predict(rows(1), 1)),
            asyncio.ensure_future(batcher.predict(rows(2), 1, {"scale": 3})),
            asyncio.ensure_future(batcher.predict(rows(4), 1)),
        ]
        await settle()
        clock.advance(0)
        assert [list(r) for r in await asyncio.gather(*callers)] == [[1], [6], [4]]
        assert calls == [(1, None), (1, {"scale": 3}), (1, None)]

    asyncio.run(scenario())


def test_a_caller_that_timed_out_during_its_predict_leaves_the_others_served() -> None:
    async def scenario() -> None:
        clock, model, thread = ManualClock(), RecordingModel(), ManualThread(held=True)
        batcher = batcher_for(model.predict, clock, thread)
        impatient = asyncio.ensure_future(batcher.predict(rows(1), 1))
        patient = asyncio.ensure_future(batcher.predict(rows(2), 1))
        await settle()
        clock.advance(0)
        await settle()
        impatient.cancel()
        thread.release_one()
        assert list(await patient) == [20]
        assert impatient.cancelled()

    asyncio.run(scenario())


def test_concurrency_bounds_the_predicts_running_at_once() -> None:
    async def scenario() -> None:
        clock, model, thread = ManualClock(), RecordingModel(), ManualThread(held=True)
        batcher = batcher_for(model.predict, clock, thread, merge=False, concurrency=2)
        callers = [asyncio.ensure_future(batcher.predict(rows(v), 1)) for v in (1, 2, 3)]
        await settle()
        assert len(thread.waiting) == 2
        assert batcher.queued == 1
        thread.release_one()
        await settle()
        assert len(thread.waiting) == 2
        assert batcher.queued == 0
        thread.release_one()
        thread.release_one()
        assert [list(r) for r in await asyncio.gather(*callers)] == [[10], [20], [30]]

    asyncio.run(scenario())


def test_a_caller_gets_a_timeout_error_when_the_predict_outlasts_its_deadline() -> None:
    async def scenario() -> None:
        clock, model, thread = ManualClock(), RecordingModel(), ManualThread(held=True)
        batcher = batcher_for(model.predict, clock, thread)
        call = asyncio.ensure_future(batcher.predict(rows(1), 1, within_seconds=0.01))
        await settle()
        clock.advance(0)
        with pytest.raises(PredictionTimeoutError, match=r"no prediction within 0\.01s"):
            await call
        thread.release_one()  # the predict ends later; nobody is left to answer
        await settle()
        again = asyncio.ensure_future(batcher.predict(rows(2), 1, within_seconds=5))
        await settle()
        clock.advance(0)
        await settle()
        thread.release_one()
        assert list(await again) == [20]

    asyncio.run(scenario())


def test_deadlines_keep_only_what_is_pending() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(60)
        for _ in range(1000):
            answered: asyncio.Future[Any] = loop.create_future()
            deadlines.watch(loop, answered)
            answered.set_result(None)
        assert len(deadlines._pending) == 1

    asyncio.run(scenario())
