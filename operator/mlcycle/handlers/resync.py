"""The periodic resync of one kind, run by the operator itself rather than by kopf timers.

A kopf timer makes kopf hold its finalizer on every object the timer runs for (kopf must
see the deletion to stop the timer), so every object would hang in deletion once the
operator is gone. As kopf's maintainer suggests for this case, the work starts from the
create/resume handlers instead: an object is followed once a handler has seen it (kopf
runs handlers only after its indexes are filled), ticked from the kind's index (always the
freshest body), and dropped when it leaves the index or starts being deleted. Finalizers
are then left to the deletion handlers that guard real cleanup.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from mlcycle.reconcile.standby import StandbyGate

Tick = Callable[[Mapping[str, Any]], Awaitable[None]]
Due = Callable[[Mapping[str, Any]], bool]
KindTick = Callable[[Mapping[str, Any], Any, Mapping[str, Any]], Awaitable[object]]
"""A kind's tick: (body, kopf memo, kopf indexes by id)."""

logger = logging.getLogger(__name__)


def _always(_body: Mapping[str, Any]) -> bool:
    return True


class Resync:
    """Every `interval` seconds, one tick per followed object of the kind that is due.

    An object's tick never overlaps its previous one (a slow MLflow call delays only that
    object); a failing tick is logged and the object is ticked again next round."""

    def __init__(self, kind: str, interval: float, due: Due = _always) -> None:
        self.kind = kind
        self.interval = interval
        self._due = due
        self._followed: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._context: contextvars.Context | None = None

    def follow(self, uid: str) -> None:
        """Called from a kopf resource handler: ticks run in a copy of its context, where
        kopf keeps what `kopf.event` needs (its Event queue), as they did in a timer."""
        self._followed.add(uid)
        self._context = contextvars.copy_context()

    def forget(self, uid: str) -> None:
        self._followed.discard(uid)

    def register(self, registry: kopf.OperatorRegistry, index_id: str, tick: KindTick) -> None:
        """Runs for the operator's life: started and stopped with it, fed by the kind's
        index by uid (`index_id`)."""

        @kopf.on.startup(registry=registry, id=f"{self.kind}-resync-start")
        async def start(memo: Any, **indexes: Any) -> None:
            async def one(body: Mapping[str, Any]) -> None:
                await tick(body, memo, indexes)

            self.start(indexes[index_id], one, memo.context.standby)

        @kopf.on.cleanup(registry=registry, id=f"{self.kind}-resync-stop")
        async def stop(**_: Any) -> None:
            await self.stop()

    def start(self, bodies: Mapping[Any, Any], tick: Tick, standby: StandbyGate) -> None:
        """`bodies`: the kind's kopf index by uid (a live view kopf keeps current)."""
        self._loop = asyncio.create_task(self._run(bodies, tick, standby), name=self.kind)

    async def stop(self) -> None:
        tasks = [task for task in (self._loop, *self._running.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()

    async def _run(self, bodies: Mapping[Any, Any], tick: Tick, standby: StandbyGate) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self._followed or await standby.standing_by():
                continue
            self.round(bodies, tick)

    def round(self, bodies: Mapping[Any, Any], tick: Tick) -> None:
        """Starts this round's ticks; returns at once."""
        for uid in list(self._followed):
            body = next(iter(bodies[uid]), None) if uid in bodies else None
            if body is None:
                self._followed.discard(uid)  # deleted: gone from the index
                continue
            if body.get("metadata", {}).get("deletionTimestamp") or not self._due(body):
                continue
            if uid in self._running:
                continue  # the previous tick is still at work
            task = asyncio.create_task(
                self._tick(uid, body, tick),
                name=f"{self.kind}/{uid}",
                context=self._context.copy() if self._context is not None else None,
            )
            self._running[uid] = task

    async def _tick(self, uid: str, body: Mapping[str, Any], tick: Tick) -> None:
        try:
            await tick(body)
        except asyncio.CancelledError:
            raise
        except ValidationError:
            pass  # an invalid spec: the change handler has recorded InvalidSpec
        except Exception:
            metadata = body.get("metadata", {})
            logger.exception(
                "%s %s/%s: resync failed; retried next round",
                self.kind,
                metadata.get("namespace"),
                metadata.get("name"),
            )
        finally:
            self._running.pop(uid, None)
