"""Which backend serves a request, and whether it is mirrored: pure, deterministic.

Weights are met exactly rather than on average: smooth weighted round-robin (nginx's
algorithm) interleaves backends so that every window of `sum(weights)` picks holds each
backend exactly `weight` times, and the shadow share is a running accumulator rather than
a coin toss. A canary at 10% therefore gets 1,000 of 10,000 requests, not 1,000 ± 30.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

from mlcycle.api.routerconfig import RouterConfig


class SmoothWeightedRoundRobin:
    """Each pick adds every weight to its backend's credit, takes the backend with the most
    credit and charges it the total. Ties go to the backend listed first."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        positive = [(name, weight) for name, weight in weights.items() if weight > 0]
        self._names = [name for name, _ in positive]
        self._weights = [weight for _, weight in positive]
        self._credit = [0] * len(positive)
        self._total = sum(self._weights)

    def next(self) -> str | None:
        if not self._names:
            return None
        credit = self._credit
        best = 0
        for index, weight in enumerate(self._weights):
            credit[index] += weight
            if credit[index] > credit[best]:
                best = index
        credit[best] -= self._total
        return self._names[best]


class ShareCounter:
    """Says yes to exactly `percent` of calls, spread evenly: an accumulator, not a die.

    Counted in millionths, in integers, so 33.3% of 10,000 is 3,330 and not 3,329.
    """

    _WHOLE = 1_000_000

    def __init__(self, percent: float) -> None:
        self._share = round(percent * self._WHOLE / 100)
        self._accumulated = 0

    def next(self) -> bool:
        self._accumulated += self._share
        if self._accumulated >= self._WHOLE:
            self._accumulated -= self._WHOLE
            return True
        return False


@dataclass(frozen=True, slots=True)
class Route:
    primary: str | None
    """None: nothing can serve the request (no weight on an available backend)."""
    shadow: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderPin:
    header: bytes
    """Lower-case name, as the proxy keys request headers."""
    value: bytes | None
    backend: str


class RoutingPolicy:
    """The routing decisions of one configuration over the backends that have endpoints.

    Built again when the configuration or the set of available backends changes; the
    split starts afresh then, which shifts at most one window of picks.
    """

    def __init__(self, config: RouterConfig, available: Set[str]) -> None:
        self._split = SmoothWeightedRoundRobin(
            {name: weight for name, weight in config.weights.items() if name in available}
        )
        self.pins = tuple(
            HeaderPin(
                route.header.lower().encode("latin-1"),
                None if route.value is None else route.value.encode("latin-1"),
                route.backend,
            )
            for route in config.header_routes
        )
        self.pin_headers = frozenset(pin.header for pin in self.pins)
        shadow = config.shadow
        self._shadow_backend = (
            shadow.backend if shadow is not None and shadow.backend in available else None
        )
        self._shadow_share = ShareCounter(shadow.percent if shadow is not None else 0.0)

    def pinned_backend(self, headers: Mapping[bytes, bytes]) -> str | None:
        """The first header rule that matches; `headers` holds lower-case names."""
        for pin in self.pins:
            value = headers.get(pin.header)
            if value is not None and (pin.value is None or pin.value == value):
                return pin.backend
        return None

    def choose(self, headers: Mapping[bytes, bytes]) -> Route:
        primary = self.pinned_backend(headers) if self.pins else None
        if primary is None:
            primary = self._split.next()
        shadow = self._shadow_backend
        if shadow is None or primary is None or primary == shadow:
            return Route(primary)
        return Route(primary, shadow if self._shadow_share.next() else None)
