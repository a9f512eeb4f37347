"""Whether a predict is cheap enough to run on the event loop: a running cost estimate.

A thread hop costs about as much as a scikit-learn predict of a few rows (measured: a
128 µs iris predict takes 340 µs through a one-thread executor, the GIL and a wake-up
included), which would cut the server's throughput by half or more. So a native flavor's
predict whose expected cost fits within a small budget (1 ms by default) runs inline: a
probe then waits at most about that long. Everything else runs in the predict thread: the
first calls (measured there), any pyfunc model (user code may sleep, download or lock), and
any model for a while after one call outran the budget.

The expected cost of a batch is a line fitted to the recent calls (seconds against rows,
exponentially weighted), since a tabular model's predict costs a fixed part plus a little
per row; beyond the largest batch measured it is extrapolated in proportion to the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

WARMUP_CALLS = 20
ALPHA = 0.05
"""Weight of the newest call: the estimate follows the last few dozen calls."""


@dataclass
class PredictCost:
    budget_seconds: float
    """0 turns inline predicts off."""
    calls: int = 0
    largest_rows: int = 1
    penalty_seconds: float = 0.0
    """The last call over the budget, decaying: while above it, nothing runs inline."""
    _w: float = 0.0
    _wx: float = 0.0
    _wxx: float = 0.0
    _wy: float = 0.0
    _wxy: float = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        self.calls += 1
        self.largest_rows = max(self.largest_rows, rows)
        keep = 1 - ALPHA
        self._w = self._w * keep + 1
        self._wx = self._wx * keep + rows
        self._wxx = self._wxx * keep + rows * rows
        self._wy = self._wy * keep + seconds
        self._wxy = self._wxy * keep + rows * seconds
        self.penalty_seconds *= keep
        if seconds > self.budget_seconds:
            self.penalty_seconds = max(self.penalty_seconds, seconds)

    def expected_seconds(self, rows: int) -> float:
        if self._w == 0:
            return float("inf")
        spread = self._w * self._wxx - self._wx * self._wx
        slope = (self._w * self._wxy - self._wx * self._wy) / spread if spread > 1e-9 else 0.0
        slope = max(slope, 0.0)
        intercept = max((self._wy - slope * self._wx) / self._w, 0.0)
        within = min(rows, self.largest_rows)
        expected = intercept + slope * within
        return expected * rows / within if rows > within else expected

    def fits(self, rows: int) -> bool:
        """Expected to finish within the budget: may run on the event loop."""
        if self.budget_seconds <= 0 or self.calls < WARMUP_CALLS:
            return False
        if self.penalty_seconds > self.budget_seconds:
            return False
        return self.expected_seconds(rows) <= self.budget_seconds
