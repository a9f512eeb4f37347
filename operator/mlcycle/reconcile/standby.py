"""The operator's own periodic work pauses when kopf's does: a replica outranked in
peering stands by, judged from kopf's peering objects at most every REFRESH_SECONDS."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlcycle.plan.standby import outranked

# How stale the answer may be: a replica that kopf has just paused may tick this long more.
REFRESH_SECONDS = 2.0

PeeringReader = Callable[[], Sequence[Mapping[str, Any]] | None]

logger = logging.getLogger(__name__)


class StandbyGate:
    """Answers "is this replica standing by?" for work kopf's peering cannot pause.

    `read` returns the peering objects' statuses, or None while one is missing (kopf stays
    paused then); without `read` (a standalone operator) the answer is always no."""

    def __init__(
        self,
        read: PeeringReader | None,
        identity: str,
        priority: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._identity = identity
        self._priority = priority
        self._clock = clock
        self._checked_at: float | None = None
        self._standing_by = True
        self._lock = asyncio.Lock()

    async def standing_by(self) -> bool:
        if self._read is None:
            return False
        async with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= REFRESH_SECONDS:
                self._standing_by = await self._judge()
                self._checked_at = now
            return self._standing_by

    async def _judge(self) -> bool:
        assert self._read is not None
        try:
            peerings = await asyncio.to_thread(self._read)
        except Exception as error:
            # Unable to see the peers, two replicas could both act: wait, as kopf does
            # while its peering is unknown.
            logger.warning("Cannot read the peering objects, standing by: %s", type(error).__name__)
            return True
        if peerings is None:
            return True
        return outranked(
            peerings, self._identity, self._priority, datetime.datetime.now(datetime.UTC)
        )
