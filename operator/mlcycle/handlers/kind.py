"""The handlers every kind shares, written once: create, update and resume, the resync
tick and child events all turn the body into the typed object, run the kind's reconcile
and post its Events; deletion stops the resync and forgets the object's memory record.

A kind's own module adds only what is its own: its indexes, the child watches that
trigger it, and its deletion policy.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import kopf
from pydantic import ValidationError

from mlcycle.api.v1alpha1 import GROUP, VERSION, CustomResource
from mlcycle.handlers.acceptance import record_acceptance
from mlcycle.handlers.resync import Resync
from mlcycle.reconcile.memory import Memory
from mlcycle.reconcile.outcome import Outcome

Resource = TypeVar("Resource", bound=CustomResource)


@dataclass(frozen=True)
class Trigger:
    """What a pass was started with, beside the object itself."""

    memo: Any
    """kopf's memo: `memo.context` is the operator's context."""
    indexes: Mapping[str, Any]
    """kopf's indexes by id (kopf passes each to a handler as a keyword argument)."""
    now: datetime.datetime
    resync: bool = False
    """A tick of the operator's resync, rather than a change kopf saw."""


KindReconcile = Callable[[Resource, Trigger], Awaitable[Outcome]]
"""One pass of a kind: the typed object and its trigger in, Events and a retry out."""


class KindHandlers(Generic[Resource]):
    """The create/update/resume handlers, the resync tick and the deletion bookkeeping of
    one kind."""

    def __init__(
        self,
        model: type[Resource],
        *,
        handler_prefix: str,
        reconcile: KindReconcile[Resource],
        memory: Callable[[Any], Memory[Any]],
        resync: Resync,
        waiting_on: str,
    ) -> None:
        """`handler_prefix` names the handlers (`<prefix>-create`...): kopf keeps its
        progress in annotations under these ids, so they never change. `memory` finds the
        kind's memory store in kopf's memo; `waiting_on` says in kopf's retry log line
        what a retry waits for."""
        self.model = model
        self.handler_prefix = handler_prefix
        self._reconcile = reconcile
        self._memory = memory
        self.resync = resync
        self._waiting_on = waiting_on

    def register(self, registry: kopf.OperatorRegistry, index_id: str) -> None:
        """The change handlers and the resync, which reads the kind's bodies from the
        index `index_id` (by uid)."""
        plural = self.model.plural()
        for cause, register in (
            ("create", kopf.on.create),
            ("update", kopf.on.update),
            ("resume", kopf.on.resume),
        ):
            handler_id = f"{self.handler_prefix}-{cause}"
            register(GROUP, VERSION, plural, registry=registry, id=handler_id)(self.on_change)
        self.resync.register(registry, index_id, self.on_tick)

    async def on_change(self, body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        """A change kopf saw (or its resume at startup). An invalid spec becomes the
        InvalidSpec condition, never an exception kopf would retry; a pass that must come
        back (a backoff, a registration awaited) is kopf's to retry after the delay."""
        self.resync.follow(body["metadata"]["uid"])
        try:
            obj = self.model.from_body(body)
        except ValidationError:
            record_acceptance(self.model, body, patch)
            return
        outcome = await self._pass(obj, body, Trigger(memo, kwargs, _now()))
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(f"waiting on {self._waiting_on}", delay=outcome.retry_after)

    async def on_tick(self, body: Mapping[str, Any], memo: Any, indexes: Mapping[str, Any]) -> None:
        await self.trigger(body, memo, indexes, resync=True)

    async def trigger(
        self,
        body: Mapping[str, Any],
        memo: Any,
        indexes: Mapping[str, Any],
        *,
        resync: bool = False,
    ) -> None:
        """A pass the operator starts itself: a resync tick, a child's event. Its retry is
        the next trigger; an invalid spec was recorded by the change handler."""
        try:
            obj = self.model.from_body(body)
        except ValidationError:
            return
        await self._pass(obj, body, Trigger(memo, indexes, _now(), resync))

    def deleted(self, body: kopf.Body, memo: Any) -> Resource | None:
        """The object is being deleted: no more ticks, nothing remembered of it. Returns it
        typed for the kind's clean-up, None when its spec is invalid (it never acted)."""
        uid = body["metadata"]["uid"]
        self.resync.forget(uid)
        self._memory(memo).forget(uid)
        try:
            return self.model.from_body(body)
        except ValidationError:
            return None

    async def _pass(self, obj: Resource, body: Mapping[str, Any], trigger: Trigger) -> Outcome:
        with trigger.memo.context.metrics.reconciling(self.model.kind_name()):
            outcome = await self._reconcile(obj, trigger)
        for event in outcome.events:
            kopf.event(
                cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message
            )
        return outcome


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
