"""Whether this replica stands by: the rule kopf's peering pauses an operator by, for the
work mlcycle schedules itself (the periodic resync), which kopf's pause does not reach."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

# kopf's default when a peer records none.
_DEFAULT_LIFETIME_S = 60


def _live(entry: Mapping[str, Any], now: datetime.datetime) -> bool:
    lastseen = entry.get("lastseen")
    if not isinstance(lastseen, str):
        return True  # kopf counts a peer without a keep-alive time as just seen
    try:
        seen = datetime.datetime.fromisoformat(lastseen)
    except ValueError:
        return True
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    lifetime = datetime.timedelta(seconds=int(entry.get("lifetime", _DEFAULT_LIFETIME_S)))
    return seen + lifetime > now


def outranked(
    peerings: Iterable[Mapping[str, Any]],
    identity: str,
    priority: int,
    now: datetime.datetime,
) -> bool:
    """True while any peering object (its `status`, one entry per peer) names a live peer
    other than `identity` with a priority at or above `priority`.

    kopf pauses on an equal priority too (it cannot tell which of the two should run), so
    this does as well: two replicas never both tick."""
    for status in peerings:
        for peer, entry in status.items():
            if peer == identity or not isinstance(entry, Mapping):
                continue
            if int(entry.get("priority", 0)) >= priority and _live(entry, now):
                return True
    return False
