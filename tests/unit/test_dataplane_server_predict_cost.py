"""When a predict may run on the event loop: only once measured cheap, and never after a
call outran the budget until the estimate has come back down."""

from __future__ import annotations

import asyncio

import pytest

from mlcycle.dataplane.server.predict_cost import WARMUP_CALLS, PredictCost
from tests.unit.test_dataplane_server_batching import (
    ManualClock,
    ManualThread,
    RecordingModel,
    batcher_for,
    rows,
    settle,
)

pytestmark = pytest.mark.unit

BUDGET = 0.001


def measured(seconds: float, calls: int = WARMUP_CALLS, rows: int = 1) -> PredictCost:
    cost = PredictCost(BUDGET)
    for _ in range(calls):
        cost.observe(rows, seconds)
    return cost


def test_nothing_is_inline_before_enough_calls_were_measured() -> None:
    assert not measured(0.0001, calls=WARMUP_CALLS - 1).fits(1)
    assert measured(0.0001).fits(1)


def test_a_cheap_predict_fits_until_the_batch_outgrows_what_was_measured() -> None:
    cost = measured(0.0002, rows=2)
    assert cost.fits(2)
    assert cost.fits(10)  # 5x the largest batch measured, in proportion: 1 ms
    assert not cost.fits(12)


def test_the_cost_of_a_batch_is_a_line_through_the_calls_measured() -> None:
    cost = PredictCost(BUDGET)
    for _ in range(WARMUP_CALLS):
        for size in (1, 8, 32):
            cost.observe(size, 0.0002 + size * 0.00001)  # fixed part plus a little per row
    assert cost.expected_seconds(16) == pytest.approx(0.00036)
    assert cost.fits(32)  # 0.52 ms, where proportion to the rows would say 6.4 ms
    assert not cost.fits(128)  # beyond the measured: 4 x 0.52 ms


def test_one_slow_call_sends_predicts_to_the_thread_until_the_average_recovers() -> None:
    cost = measured(0.0001)
    cost.observe(1, 0.5)
    assert not cost.fits(1)
    for _ in range(100):
        cost.observe(1, 0.0001)
    assert not cost.fits(1)  # 0.5 s decays by 5 % a call: 100 calls leave 3 ms
    for _ in range(50):
        cost.observe(1, 0.0001)
    assert cost.fits(1)


def test_a_zero_budget_never_runs_inline() -> None:
    cost = PredictCost(0)
    for _ in range(WARMUP_CALLS):
        cost.observe(1, 0.0)
    assert not cost.fits(1)


def test_the_batcher_runs_a_measured_cheap_predict_without_the_thread() -> None:
    async def scenario() -> None:
        clock, model, thread = ManualClock(), RecordingModel(), ManualThread()
        cost = PredictCost(BUDGET)
        batcher = batcher_for(model.predict, clock, thread, inline=cost)
        for value in range(WARMUP_CALLS):  # measured in the thread
            call = asyncio.ensure_future(batcher.predict(rows(value), 1))
            await settle()
            clock.advance(0)
            assert list(await call) == [value * 10]
        assert cost.calls == WARMUP_CALLS
        thread.held = True  # the thread would now hold any job it got
        call = asyncio.ensure_future(batcher.predict(rows(7), 1))
        await settle()
        clock.advance(0)
        assert list(await call) == [70]
        assert thread.waiting == []

    asyncio.run(scenario())
