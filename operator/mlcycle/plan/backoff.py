"""Retry delays for calls to a service that is down: exponential, capped, with jitter."""

from typing import Final

# 2 s doubling to 5 min, with equal jitter so objects that failed together do not all come
# back in the same second.
BACKOFF_BASE_SECONDS: Final = 2.0
BACKOFF_CAP_SECONDS: Final = 300.0


def backoff_seconds(retries: int, jitter: float) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random (`jitter` in
    [0, 1)), capped, so a fleet of objects never retries in lockstep."""
    step: float = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(retries - 1, 0))
    return step / 2 + step / 2 * min(max(jitter, 0.0), 1.0)
