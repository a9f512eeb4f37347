"""Canary analysis: deltas of the router's cumulative counters over one interval, the
figures they give (requests, success rate, p99 latency, shadow agreement) and the verdict
against `spec.analysis`.

Pure: the samples arrive as `CounterSample`s (summed over the router pods by the adapter),
the clock is an argument.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from mlcycle.api.v1alpha1.inferenceservice import Analysis, AnalysisResult, CounterSample
from mlcycle.plan.inferenceservice.analysis_prometheus import (
    evaluate_prometheus_checks,
    overall_outcome,
)

_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """A Go-style duration (`30s`, `1m30s`, `500ms`) in seconds; the schema checked its form."""
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def _bucket_bound(le: str) -> float:
    return math.inf if le in ("+Inf", "inf", "Inf") else float(le)


@dataclass(frozen=True)
class IntervalFigures:
    """What the candidate did during one interval."""

    requests: float
    errors: float
    latency_buckets: dict[str, float] = field(default_factory=dict)
    client_errors: float = 0
    stable_requests: float = 0
    stable_client_errors: float = 0
    shadow_requests: float = 0
    shadow_failures: float = 0
    shadow_comparisons: float = 0
    shadow_agreements: float = 0
    candidate_predictions: dict[str, float] = field(default_factory=dict)
    stable_predictions: dict[str, float] = field(default_factory=dict)

    @property
    def drift(self) -> float | None:
        return prediction_drift(self.candidate_predictions, self.stable_predictions)

    @property
    def client_error_rate(self) -> float | None:
        return None if self.requests <= 0 else self.client_errors / self.requests

    @property
    def stable_client_error_rate(self) -> float | None:
        if self.stable_requests <= 0:
            return None
        return self.stable_client_errors / self.stable_requests

    @property
    def excess_client_errors(self) -> float:
        """The candidate's 4xx beyond the stable's rate: requests the stable answered and
        the candidate refused (a broken input schema). A client's own bad requests get a
        4xx from both and count against neither; without a stable figure, none count."""
        stable_rate = self.stable_client_error_rate
        if stable_rate is None:
            return 0.0
        return max(0.0, self.client_errors - self.requests * stable_rate)

    @property
    def success_rate(self) -> float | None:
        """Server errors fail a request; so do the excess client errors."""
        if self.requests <= 0:
            return None
        return (self.requests - self.errors - self.excess_client_errors) / self.requests

    @property
    def shadow_success_rate(self) -> float | None:
        if self.shadow_requests <= 0:
            return None
        return (self.shadow_requests - self.shadow_failures) / self.shadow_requests

    @property
    def shadow_agreement(self) -> float | None:
        if self.shadow_comparisons <= 0:
            return None
        return self.shadow_agreements / self.shadow_comparisons

    def latency_quantile(self, quantile: float) -> float | None:
        return histogram_quantile(quantile, self.latency_buckets)


def interval_figures(baseline: CounterSample | None, current: CounterSample) -> IntervalFigures:
    """current - baseline, counter by counter. A counter that went down means a router pod
    restarted (its counters began again at zero): as Prometheus' `increase` does, the
    current value is then taken as the increase."""

    def delta(now: float, then: float) -> float:
        return now if now < then else now - then

    before = baseline or CounterSample()

    def deltas(now: Mapping[str, float], then: Mapping[str, float]) -> dict[str, float]:
        return {key: delta(count, then.get(key, 0.0)) for key, count in now.items()}

    buckets = deltas(current.latency_buckets, before.latency_buckets)
    return IntervalFigures(
        requests=delta(current.requests, before.requests),
        errors=delta(current.errors, before.errors),
        latency_buckets=buckets,
        client_errors=delta(current.client_errors, before.client_errors),
        stable_requests=delta(current.stable_requests, before.stable_requests),
        stable_client_errors=delta(current.stable_client_errors, before.stable_client_errors),
        shadow_requests=delta(current.shadow_requests, before.shadow_requests),
        shadow_failures=delta(current.shadow_failures, before.shadow_failures),
        shadow_comparisons=delta(current.shadow_comparisons, before.shadow_comparisons),
        shadow_agreements=delta(current.shadow_agreements, before.shadow_agreements),
        candidate_predictions=deltas(current.candidate_predictions, before.candidate_predictions),
        stable_predictions=deltas(current.stable_predictions, before.stable_predictions),
    )


def prediction_drift(candidate: Mapping[str, float], stable: Mapping[str, float]) -> float | None:
    """Total variation distance between the two versions' predicted-class distributions
    over the interval (0: identical, 1: disjoint); None when either predicted nothing."""
    candidate_total, stable_total = sum(candidate.values()), sum(stable.values())
    if candidate_total <= 0 or stable_total <= 0:
        return None
    classes = set(candidate) | set(stable)
    return 0.5 * sum(
        abs(candidate.get(key, 0.0) / candidate_total - stable.get(key, 0.0) / stable_total)
        for key in classes
    )


def histogram_quantile(quantile: float, buckets: Mapping[str, float]) -> float | None:
    """Prometheus' `histogram_quantile` over cumulative buckets keyed by `le`: linear
    interpolation inside the bucket the rank falls in; the highest finite bound when the
    rank falls in the +Inf bucket; None without observations."""
    ordered = sorted((_bucket_bound(le), count) for le, count in buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = quantile * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


Mode = Literal["live", "shadow"]


def _ratio(value: float) -> str:
    return f"{value:.3f}"


def analyse(
    analysis: Analysis,
    figures: IntervalFigures,
    *,
    mode: Mode,
    queries: Mapping[str, float | None] | None = None,
    now: datetime.datetime,
) -> AnalysisResult:
    """The verdict on one interval. Too few requests hold the step (Held) rather than fail
    it: an idle service says nothing about the candidate. The first failing check names
    itself, its value and its threshold in the message."""
    shadow = mode == "shadow"
    requests = figures.shadow_requests if shadow else figures.requests
    success_rate = figures.shadow_success_rate if shadow else figures.success_rate
    # The router times mirrored requests only against their own deadline, not in a
    # histogram: a shadow rollout is judged by answers and agreement, not latency.
    p99_seconds = None if shadow else figures.latency_quantile(0.99)
    p99_ms = None if p99_seconds is None else round(p99_seconds * 1000, 3)
    agreement = figures.shadow_agreement
    drift = figures.drift if analysis.drift_max is not None else None
    client_rate = None if shadow else figures.client_error_rate
    stable_client_rate = None if shadow else figures.stable_client_error_rate
    found_queries = {name: value for name, value in (queries or {}).items() if value is not None}
    result = AnalysisResult(
        time=now,
        outcome="Passed",
        requests=int(requests),
        success_rate=None if success_rate is None else round(success_rate, 4),
        client_error_rate=None if client_rate is None else round(client_rate, 4),
        stable_client_error_rate=None
        if stable_client_rate is None
        else round(stable_client_rate, 4),
        latency_p99_ms=p99_ms,
        shadow_agreement=None if agreement is None else round(agreement, 4),
        drift=None if drift is None else round(drift, 4),
        queries=found_queries,
    )
    if requests < max(analysis.min_requests, 1):
        what = "mirrored requests" if shadow else "requests"
        return result.model_copy(
            update={
                "outcome": "Held",
                "message": f"{int(requests)} {what} in the interval,"
                f" fewer than minRequests {analysis.min_requests}: step held",
            }
        )
    failure = _first_failure(analysis, success_rate, p99_ms, agreement, shadow)
    if failure is not None and failure.startswith("success rate") and client_rate:
        stable_text = "unknown" if stable_client_rate is None else _ratio(stable_client_rate)
        failure += f" (4xx rate {_ratio(client_rate)}, stable's {stable_text})"
    drift_max = analysis.drift_max
    if failure is None and drift is not None and drift_max is not None and drift > drift_max:
        failure = f"prediction drift {drift:.3f} above driftMax {analysis.drift_max:g}"
    # Run only by an operator with a Prometheus (`queries` None otherwise).
    checks = evaluate_prometheus_checks(analysis.prometheus, queries) if queries is not None else []
    verdict = overall_outcome(checks)
    if failure is None and verdict == "Failed":
        failure = next(f"Prometheus check {c.message}" for c in checks if c.outcome == "Failed")
    if failure is not None:
        return result.model_copy(update={"outcome": "Failed", "message": failure})
    if verdict == "Held":
        # A query without data (no series yet, a ratio over nothing) is a quiet interval.
        missing = ", ".join(c.name for c in checks if c.outcome == "Held")
        return result.model_copy(
            update={
                "outcome": "Held",
                "message": f"Prometheus checks without data: {missing}: step held",
            }
        )
    return result


def _first_failure(
    analysis: Analysis,
    success_rate: float | None,
    p99_ms: float | None,
    agreement: float | None,
    shadow: bool,
) -> str | None:
    minimum = analysis.success_rate_min
    if minimum is not None and success_rate is not None and success_rate < minimum:
        return f"success rate {_ratio(success_rate)} below successRateMin {_ratio(minimum)}"
    maximum = analysis.latency_p99_max_ms
    if maximum is not None and p99_ms is not None and p99_ms > maximum:
        return f"latency p99 {p99_ms:.1f} ms above latencyP99MaxMs {maximum}"
    agreement_min = analysis.shadow_agreement_min
    if shadow and agreement_min is not None:
        if agreement is None:
            return "no mirrored request could be compared: shadow agreement unknown"
        if agreement < agreement_min:
            return (
                f"shadow agreement {_ratio(agreement)} below shadowAgreementMin"
                f" {_ratio(agreement_min)}"
            )
    return None
