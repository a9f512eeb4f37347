"""Exact weighted split, header pinning and shadow share of the router, as pure decisions."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from mlcycle.api.routerconfig import RouterConfig
from mlcycle.dataplane.router.selection import (
    RoutingPolicy,
    ShareCounter,
    SmoothWeightedRoundRobin,
)

pytestmark = pytest.mark.unit

PICKS = 10_000


def _config(**fields: Any) -> RouterConfig:
    backends = fields.pop("backends", ("stable", "canary"))
    return RouterConfig.model_validate(
        {
            "service": "iris",
            "backends": {
                name: {"endpoints": [f"127.0.0.1:{9000 + i}"]} for i, name in enumerate(backends)
            },
            **fields,
        }
    )


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param({"stable": 90, "canary": 10}, id="90/10"),
        pytest.param({"stable": 50, "canary": 50}, id="50/50"),
        pytest.param({"stable": 99, "canary": 1}, id="99/1"),
        pytest.param({"stable": 2, "canary": 1}, id="2/1 (thirds)"),
        pytest.param({"a": 7, "b": 2, "c": 1}, id="three backends"),
        pytest.param({"stable": 67, "canary": 33, "off": 0}, id="weight 0 beside others"),
        pytest.param({"only": 5}, id="single backend"),
    ],
)
def test_split_is_within_one_point_over_ten_thousand_picks(weights: dict[str, int]) -> None:
    split = SmoothWeightedRoundRobin(weights)
    counts = Counter(split.next() for _ in range(PICKS))
    total = sum(weights.values())
    for name, weight in weights.items():
        share_points = 100 * counts[name] / PICKS
        assert abs(share_points - 100 * weight / total) <= 1, (name, counts)
        # Stronger than the ±1 point promise: off by less than one request per backend.
        assert abs(counts[name] - PICKS * weight / total) < 1, (name, counts)


def test_weight_zero_is_never_picked_and_no_weight_picks_nothing() -> None:
    split = SmoothWeightedRoundRobin({"stable": 1, "canary": 0})
    assert {split.next() for _ in range(1000)} == {"stable"}
    assert SmoothWeightedRoundRobin({"stable": 0}).next() is None
    assert SmoothWeightedRoundRobin({}).next() is None


def test_split_interleaves_so_every_window_is_exact() -> None:
    split = SmoothWeightedRoundRobin({"stable": 9, "canary": 1})
    picks = [split.next() for _ in range(1000)]
    for start in range(0, 1000, 10):
        assert picks[start : start + 10].count("canary") == 1
    # Smooth: the canary's picks are spread out, never back to back.
    assert "canary,canary" not in ",".join(str(p) for p in picks)


@pytest.mark.parametrize(
    ("percent", "expected"),
    [(0, 0), (25, 2500), (10, 1000), (100, PICKS), (33.3, 3330), (0.5, 50)],
)
def test_share_counter_says_yes_to_exactly_the_share(percent: float, expected: int) -> None:
    share = ShareCounter(percent)
    assert sum(share.next() for _ in range(PICKS)) == expected


PIN_RULES = [
    {"header": "X-Version", "value": "canary", "backend": "canary"},
    {"header": "x-version", "value": "stable", "backend": "stable"},
    {"header": "X-Beta-User", "backend": "canary"},
]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({b"x-version": b"canary"}, "canary", id="value pins"),
        pytest.param({b"x-version": b"stable"}, "stable", id="second rule on the same header"),
        pytest.param({b"x-version": b"Canary"}, None, id="values are case-sensitive"),
        pytest.param({b"x-beta-user": b"anything"}, "canary", id="presence pins"),
        pytest.param({b"x-beta-user": b""}, "canary", id="empty value is presence"),
        pytest.param(
            {b"x-version": b"stable", b"x-beta-user": b"1"}, "stable", id="first rule wins"
        ),
        pytest.param({b"x-other": b"canary"}, None, id="other headers do not pin"),
        pytest.param({}, None, id="no headers"),
    ],
)
def test_header_pinning(headers: dict[bytes, bytes], expected: str | None) -> None:
    policy = RoutingPolicy(
        _config(weights={"stable": 1}, headerRoutes=PIN_RULES), {"stable", "canary"}
    )
    assert policy.pinned_backend(headers) == expected
    chosen = policy.choose(headers).primary
    assert chosen == (expected or "stable")
    assert policy.pin_headers == {b"x-version", b"x-beta-user"}


def test_pin_to_a_backend_without_endpoints_still_pins() -> None:
    """An A/B user asked for that version: a 503 tells the truth, stable would not."""
    policy = RoutingPolicy(_config(weights={"stable": 1}, headerRoutes=PIN_RULES[:1]), {"stable"})
    assert policy.choose({b"x-version": b"canary"}).primary == "canary"


def test_weights_only_go_to_backends_with_endpoints() -> None:
    config = _config(weights={"stable": 90, "canary": 10})
    only_stable = RoutingPolicy(config, {"stable"})
    assert {only_stable.choose({}).primary for _ in range(200)} == {"stable"}
    nothing = RoutingPolicy(config, set())
    assert nothing.choose({}).primary is None


def test_shadow_mirrors_the_share_of_requests_not_already_on_the_shadow_backend() -> None:
    config = _config(
        weights={"stable": 80, "canary": 20}, shadow={"backend": "canary", "percent": 25}
    )
    policy = RoutingPolicy(config, {"stable", "canary"})
    routes = [policy.choose({}) for _ in range(PICKS)]
    on_stable = [r for r in routes if r.primary == "stable"]
    assert len(on_stable) == 8000
    assert sum(r.shadow == "canary" for r in on_stable) == 2000
    assert all(r.shadow is None for r in routes if r.primary == "canary")


def test_no_shadow_when_the_shadow_backend_has_no_endpoints() -> None:
    config = _config(weights={"stable": 1}, shadow={"backend": "canary", "percent": 100})
    assert RoutingPolicy(config, {"stable"}).choose({}).shadow is None
    assert RoutingPolicy(config, {"stable", "canary"}).choose({}).shadow == "canary"
