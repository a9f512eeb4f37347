"""The operator's own resync: only followed, present, due objects are ticked, never two
ticks of one object at once, never while the replica stands by, and a failing tick does
not stop the others."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from mlcycle.handlers.resync import Resync
from mlcycle.reconcile.standby import StandbyGate
from tests.builders import a_training_job

pytestmark = pytest.mark.unit


def _index(*bodies: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {body["metadata"]["uid"]: [body] for body in bodies}


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_only_followed_present_due_objects_not_being_deleted_are_ticked() -> None:
    async def scenario() -> list[str]:
        ticked: list[str] = []

        async def tick(body: Mapping[str, Any]) -> None:
            ticked.append(body["metadata"]["uid"])

        resync = Resync("Kind", 1.0, due=lambda body: body["metadata"]["name"] != "idle")
        for uid in ("a", "idle", "deleting", "gone"):
            resync.follow(uid)
        index = _index(
            a_training_job("a").uid("a").body(),
            a_training_job("idle").uid("idle").body(),
            a_training_job("deleting").uid("deleting").deleting().body(),
            a_training_job("unfollowed").uid("unfollowed").body(),
        )
        resync.round(index, tick)
        await _settle()
        # "gone" left the index: no longer followed, even when it would come back.
        index["gone"] = [a_training_job("gone").uid("gone").body()]
        resync.round(index, tick)
        await _settle()
        return ticked

    assert asyncio.run(scenario()) == ["a", "a"]


def test_a_slow_tick_is_not_overlapped_and_a_failing_one_is_retried() -> None:
    async def scenario() -> tuple[int, int]:
        release = asyncio.Event()
        calls = {"slow": 0, "bad": 0}

        async def tick(body: Mapping[str, Any]) -> None:
            uid = body["metadata"]["uid"]
            calls[uid] += 1
            if uid == "slow":
                await release.wait()
            else:
                raise RuntimeError("MLflow said no")

        resync = Resync("Kind", 1.0)
        resync.follow("slow")
        resync.follow("bad")
        index = _index(
            a_training_job("slow").uid("slow").body(), a_training_job("bad").uid("bad").body()
        )
        for _ in range(3):
            resync.round(index, tick)
            await _settle()
        release.set()
        await _settle()
        resync.round(index, tick)
        await _settle()
        release.set()
        await resync.stop()
        return calls["slow"], calls["bad"]

    assert asyncio.run(scenario()) == (2, 4)


def test_a_forgotten_object_is_not_ticked() -> None:
    async def scenario() -> list[str]:
        ticked: list[str] = []

        async def tick(body: Mapping[str, Any]) -> None:
            ticked.append(body["metadata"]["uid"])

        resync = Resync("Kind", 1.0)
        resync.follow("a")
        resync.forget("a")
        resync.round(_index(a_training_job("a").uid("a").body()), tick)
        await _settle()
        return ticked

    assert asyncio.run(scenario()) == []


def _gate(answers: Sequence[Any], clock: list[float]) -> tuple[StandbyGate, list[int]]:
    reads = [0]
    replies = list(answers)

    def read() -> Sequence[Mapping[str, Any]] | None:
        reads[0] += 1
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        result: Sequence[Mapping[str, Any]] | None = reply
        return result

    return StandbyGate(read, "me", 10, clock=lambda: clock[0]), reads


def test_the_standby_gate_follows_the_peering_and_reads_it_at_most_every_refresh() -> None:
    async def scenario() -> tuple[list[bool], int]:
        clock = [0.0]
        outranking = [{"other": {"priority": 20}}]
        gate, reads = _gate([[{}], outranking, None, RuntimeError("apiserver down"), [{}]], clock)
        answers = [await gate.standing_by(), await gate.standing_by()]  # one read
        for _ in range(4):
            clock[0] += 2.0
            answers.append(await gate.standing_by())
        return answers, reads[0]

    answers, reads = asyncio.run(scenario())
    # free, (cached), outranked, peering missing, unreadable, free again
    assert answers == [False, False, True, True, True, False]
    assert reads == 5


def test_a_standalone_operator_never_stands_by() -> None:
    assert not asyncio.run(StandbyGate(None, "me", 0).standing_by())


def test_the_loop_ticks_every_interval_unless_standing_by() -> None:
    async def scenario() -> tuple[int, int]:
        ticked: list[str] = []

        async def tick(body: Mapping[str, Any]) -> None:
            ticked.append(body["metadata"]["uid"])

        index = _index(a_training_job("a").uid("a").body())
        active = Resync("Kind", 0.01)
        active.follow("a")
        active.start(index, tick, StandbyGate(None, "me", 0))
        standing_by = Resync("Kind", 0.01)
        standing_by.follow("a")
        never_free = StandbyGate(lambda: None, "me", 0)
        standing_by.start(index, tick, never_free)
        await asyncio.sleep(0.2)
        await active.stop()
        first = len(ticked)
        await asyncio.sleep(0.05)
        await standing_by.stop()
        return first, len(ticked)

    first, last = asyncio.run(scenario())
    assert first >= 3
    assert last == first  # the standing-by loop never ticked, the stopped one stopped


HANDLER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("handler_var")


def test_ticks_run_in_the_context_of_the_handler_that_followed() -> None:
    # kopf keeps its Event queue in context variables of its handlers: a tick posting an
    # Event must see them, as a kopf timer did.
    async def scenario() -> list[str]:
        seen: list[str] = []

        async def tick(body: Mapping[str, Any]) -> None:
            seen.append(HANDLER_VAR.get("unset"))
            HANDLER_VAR.set("changed by a tick")  # stays in that tick's own copy

        resync = Resync("Kind", 1.0)

        async def handler() -> None:
            HANDLER_VAR.set("kopf's queue")
            resync.follow("a")

        await asyncio.create_task(handler())
        for _ in range(2):
            resync.round(_index(a_training_job("a").uid("a").body()), tick)
            await _settle()
        return seen

    assert asyncio.run(scenario()) == ["kopf's queue", "kopf's queue"]
