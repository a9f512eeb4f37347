"""A replica stands by on the same rule kopf's peering pauses it by."""

from __future__ import annotations

import pytest

from mlcycle.plan.standby import outranked
from tests.builders import NOW, earlier

pytestmark = pytest.mark.unit


def _seen(seconds_ago: float) -> str:
    return earlier(seconds_ago).isoformat()


def test_alone_or_highest_it_runs() -> None:
    me = {"me": {"priority": 10, "lifetime": 60, "lastseen": _seen(1)}}
    assert not outranked([me], "me", 10, NOW)
    lower = {**me, "other": {"priority": 9, "lifetime": 60, "lastseen": _seen(1)}}
    assert not outranked([lower], "me", 10, NOW)
    assert not outranked([], "me", 10, NOW)


def test_a_live_higher_or_equal_peer_makes_it_stand_by() -> None:
    higher = {"other": {"priority": 11, "lifetime": 60, "lastseen": _seen(30)}}
    assert outranked([higher], "me", 10, NOW)
    # kopf pauses both replicas on a tie; so does this.
    equal = {"other": {"priority": 10, "lifetime": 60, "lastseen": _seen(30)}}
    assert outranked([equal], "me", 10, NOW)


def test_a_dead_peer_counts_for_nothing() -> None:
    dead = {"other": {"priority": 99, "lifetime": 60, "lastseen": _seen(61)}}
    assert not outranked([dead], "me", 10, NOW)


def test_any_namespace_peering_outranking_it_is_enough() -> None:
    quiet = {"me": {"priority": 10, "lifetime": 60, "lastseen": _seen(1)}}
    loud = {"other": {"priority": 20, "lifetime": 60, "lastseen": _seen(1)}}
    assert outranked([quiet, loud], "me", 10, NOW)


def test_kopfs_own_defaults_for_a_sparse_entry() -> None:
    # No lastseen: kopf takes it as seen now. No lifetime: kopf's 60 s.
    assert outranked([{"other": {"priority": 11}}], "me", 10, NOW)
    naive = earlier(59).replace(tzinfo=None).isoformat()
    assert outranked([{"other": {"priority": 11, "lastseen": naive}}], "me", 10, NOW)
