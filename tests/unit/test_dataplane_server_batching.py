"""Micro-batching on a manual clock: who is predicted together, and who gets which rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlcycle.dataplane.server.batching import MicroBatcher, PredictionError, split_rows

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


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def rows(*values: float) -> np.ndarray[Any, Any]:
    return np.array([[value, 0.0] for value in values])


def test_concurrent_callers_share_one_predict_and_get_their_own_rows() -> None:
    async def scenario() -> None:
        clock, model = ManualClock(), RecordingModel()
        batcher = MicroBatcher(model.predict, clock.schedule, max_batch_size=64)
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
        batcher = MicroBatcher(
            model.predict, clock.schedule, max_batch_size=4, max_wait_seconds=1.0
        )
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
        batcher = MicroBatcher(model.predict, clock.schedule, max_batch_size=64)
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

        batcher = MicroBatcher(summarise, clock.schedule, max_batch_size=64)
        callers = [asyncio.ensure_future(batcher.predict(rows(v), 1)) for v in (1, 2)]
        await settle()
        clock.advance(0)
        assert await asyncio.gather(*callers) == [1.0, 2.0]
        assert not batcher.splittable
        assert calls == [2, 1, 1]

    asyncio.run(scenario())


def test_dataframes_are_concatenated_and_split_back() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        batcher = MicroBatcher(lambda frame: frame["x"] * 2, clock.schedule, max_batch_size=64)
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
        batcher = MicroBatcher(model.predict, clock.schedule, max_batch_size=64)
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
