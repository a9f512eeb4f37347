"""Applying an object's children: server-side apply, and what the API server refuses sent
again only after a backoff kept in the object's memory record, the same for every kind."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.errors import InvalidError
from mlcycle.reconcile.memory import ObjectMemory


@dataclass(frozen=True)
class Refused:
    """The API server refused a child: a quota, a LimitRange, an admission webhook, a kind
    it does not serve. A person must act; the apply is retried with backoff meanwhile, as
    the cause may go away (a quota freed)."""

    reason: str
    message: str
    retry_after: float
    """Seconds until the children are sent again."""
    fresh: bool
    """Refused by this call; False: still backing off from an earlier refusal (nothing was
    sent, and the refusal was reported then)."""


def child_key(kind: str, namespace: str, name: str) -> str:
    """Names one child in the memory record."""
    return f"{kind} {namespace}/{name}"


async def apply_children(
    cluster: ClusterClient,
    memory: ObjectMemory[Any],
    concern: str,
    manifests: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
    jitter: float,
    *,
    refusal_reason: Callable[[InvalidError], str],
    digest: str | None = None,
) -> list[dict[str, Any]] | Refused:
    """Applies `manifests` in order, as one `concern` of the object: the objects as applied,
    or why the API server refused one (the rest are not sent). While a refusal of the same
    `digest` backs off, nothing is sent."""
    waiting = memory.waiting(concern, now, digest)
    if waiting is not None:
        return Refused(waiting.reason, waiting.message, waiting.seconds_left(now), fresh=False)
    applied = []
    for manifest in manifests:
        try:
            applied.append(await asyncio.to_thread(cluster.apply, manifest))
        except InvalidError as error:
            reason = refusal_reason(error)
            delay = memory.back_off(
                concern, now, jitter, digest=digest, reason=reason, message=error.message
            )
            return Refused(reason, error.message, delay, fresh=True)
    memory.recovered(concern)
    return applied
