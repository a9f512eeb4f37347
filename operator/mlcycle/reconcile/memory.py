"""What this process remembers about each object between passes: one record per object.

As kopf's own inventory does, everything the process keeps about one object sits in one
record (its lock, the status last written, the backoff of each concern that failed, the
last full check, the children last applied), kept by uid and dropped at once when the
object is deleted. Nothing here is state a restarted operator needs: a record is a cache
and a brake, and losing it costs one pass that calls out again.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mlcycle.plan.backoff import backoff_seconds

Cached = TypeVar("Cached")


@dataclass(frozen=True)
class Backoff:
    """A concern that failed: how often in a row, and when it may be tried again."""

    failures: int
    not_before: datetime.datetime
    digest: str | None = None
    """What was refused (a manifest's digest); something else is tried at once."""
    reason: str = ""
    message: str = ""
    """Why it failed, to be reported again while the backoff runs."""

    def seconds_left(self, now: datetime.datetime) -> float:
        return max(0.0, (self.not_before - now).total_seconds())


@dataclass(frozen=True)
class Checked(Generic[Cached]):
    """The last full check against a service without a watch (MLflow), and what it found."""

    at: datetime.datetime
    generation: int | None
    found: Cached


@dataclass(frozen=True)
class Applied:
    """A child as this operator last applied it."""

    digest: str
    at: datetime.datetime


@dataclass
class ObjectMemory(Generic[Cached]):
    """Everything this process remembers about one object."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held for a whole pass: own events, child events, kopf retries and the resync may
    fire at once for one object."""
    written_status: dict[str, Any] | None = None
    """The status this operator's last write stored. A trigger queued on the lock holds the
    body it was fired with, whose status may predate the previous holder's write; only
    this operator writes the status, so its last write is the latest there is."""
    backoffs: dict[str, Backoff] = field(default_factory=dict)
    """By concern (MLflow, a child's apply): what failed, so no trigger makes a retry storm."""
    checked: Checked[Cached] | None = None
    applied: dict[str, Applied] = field(default_factory=dict)
    """By child (`kind namespace/name`): what was last applied, so an unchanged child is
    not sent again on every tick."""

    def waiting(
        self, concern: str, now: datetime.datetime, digest: str | None = None
    ) -> Backoff | None:
        """The backoff of `concern` still running for the same `digest`, if any."""
        backoff = self.backoffs.get(concern)
        if backoff is None or backoff.digest != digest or now >= backoff.not_before:
            return None
        return backoff

    def back_off(
        self,
        concern: str,
        now: datetime.datetime,
        jitter: float,
        *,
        digest: str | None = None,
        reason: str = "",
        message: str = "",
    ) -> float:
        """Counts one more failure of `concern` and returns the delay before the next try,
        doubling with each failure in a row of the same `digest`."""
        previous = self.backoffs.get(concern)
        failures = previous.failures + 1 if previous and previous.digest == digest else 1
        delay = backoff_seconds(failures, jitter)
        self.backoffs[concern] = Backoff(
            failures, now + datetime.timedelta(seconds=delay), digest, reason, message
        )
        return delay

    def recovered(self, concern: str) -> None:
        self.backoffs.pop(concern, None)


class Memory(Generic[Cached]):
    """The records of one kind's objects, by uid."""

    def __init__(self) -> None:
        self._records: dict[str, ObjectMemory[Cached]] = {}

    def of(self, uid: str) -> ObjectMemory[Cached]:
        """The object's record, new when the process knows nothing of it yet. A pass takes
        it once and keeps it, so a deletion meanwhile never makes a second one."""
        return self._records.setdefault(uid, ObjectMemory())

    def forget(self, uid: str) -> None:
        """The object is deleted: nothing of it is kept."""
        self._records.pop(uid, None)

    def __contains__(self, uid: object) -> bool:
        return uid in self._records


class ModelLocks:
    """One lock per registered model: alias claims of one model are read and written by one
    object at a time (ModelVersions and InferenceServices alike), so two objects of this
    operator never both take the same free alias. Threading locks, as the claims are made
    from the threads the registry calls run in."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, model_name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model_name, threading.Lock())
