"""Canary analysis maths: interval deltas (with counter resets), histogram quantiles and
the verdict against thresholds."""

from __future__ import annotations

import pytest

from mlcycle.api.v1alpha1.inferenceservice import Analysis, CounterSample
from mlcycle.plan.inferenceservice.analysis import (
    IntervalFigures,
    analyse,
    duration_seconds,
    histogram_quantile,
    interval_figures,
)
from tests.builders import NOW

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3s", 3), ("1m", 60), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2.5s", 2.5)],
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("quantile", "buckets", "expected"),
    [
        # 100 observations evenly in (0.1, 0.2]: p99 interpolates inside that bucket.
        (0.99, {"0.1": 0, "0.2": 100, "+Inf": 100}, 0.199),
        (0.5, {"0.1": 50, "0.2": 100, "+Inf": 100}, 0.1),
        (0.75, {"0.1": 50, "0.2": 100, "+Inf": 100}, 0.15),
        # The rank lands in +Inf: the highest finite bound, as Prometheus answers.
        (0.99, {"0.1": 50, "0.2": 90, "+Inf": 100}, 0.2),
        # First bucket: interpolated from zero.
        (0.5, {"0.01": 10, "+Inf": 10}, 0.005),
        (0.99, {"0.1": 0, "+Inf": 0}, None),
        (0.99, {}, None),
    ],
)
def test_histogram_quantile(
    quantile: float, buckets: dict[str, float], expected: float | None
) -> None:
    found = histogram_quantile(quantile, buckets)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


def test_interval_figures_are_deltas_and_a_reset_counts_from_zero() -> None:
    baseline = CounterSample(
        requests=100, errors=5, latency_buckets={"0.1": 90, "+Inf": 100}, shadow_comparisons=10
    )
    current = CounterSample(
        requests=160, errors=8, latency_buckets={"0.1": 140, "+Inf": 160}, shadow_comparisons=4
    )
    figures = interval_figures(baseline, current)
    assert figures.requests == 60
    assert figures.errors == 3
    assert figures.latency_buckets == {"0.1": 50, "+Inf": 60}
    # 4 < 10: a router restarted, its counter began again.
    assert figures.shadow_comparisons == 4
    assert interval_figures(None, current).requests == 160


def _figures(
    requests: float, errors: float = 0, slow: float = 0, **shadow: float
) -> IntervalFigures:
    fast = requests - slow
    return IntervalFigures(
        requests=requests,
        errors=errors,
        latency_buckets={"0.05": fast, "1.0": requests, "+Inf": requests},
        **shadow,
    )


STRICT = Analysis(min_requests=20, success_rate_min=0.95, latency_p99_max_ms=200)


@pytest.mark.parametrize(
    ("figures", "outcome", "message"),
    [
        (_figures(100), "Passed", None),
        (_figures(10), "Held", "10 requests in the interval, fewer than minRequests 20"),
        (_figures(0), "Held", "0 requests"),
        (_figures(100, errors=10), "Failed", "success rate 0.900 below successRateMin 0.950"),
        (_figures(100, slow=5), "Failed", "latency p99"),
        (_figures(100, errors=5), "Passed", None),
    ],
)
def test_live_verdicts(figures: IntervalFigures, outcome: str, message: str | None) -> None:
    result = analyse(STRICT, figures, mode="live", now=NOW)
    assert result.outcome == outcome
    if message is not None:
        assert result.message is not None
        assert message in result.message
    assert result.requests == int(figures.requests)
    assert result.time == NOW


def test_shadow_verdict_counts_mirrored_requests_and_agreement() -> None:
    analysis = Analysis(min_requests=10, shadow_agreement_min=0.9, success_rate_min=0.9)
    agreeing = _figures(0, shadow_requests=50, shadow_comparisons=50, shadow_agreements=49)
    result = analyse(analysis, agreeing, mode="shadow", now=NOW)
    assert (result.outcome, result.shadow_agreement, result.requests) == ("Passed", 0.98, 50)
    assert result.latency_p99_ms is None
    disagreeing = _figures(0, shadow_requests=50, shadow_comparisons=50, shadow_agreements=40)
    result = analyse(analysis, disagreeing, mode="shadow", now=NOW)
    assert result.outcome == "Failed"
    assert result.message == "shadow agreement 0.800 below shadowAgreementMin 0.900"
    failing = _figures(0, shadow_requests=50, shadow_failures=10, shadow_comparisons=40,
                       shadow_agreements=40)  # fmt: skip
    assert analyse(analysis, failing, mode="shadow", now=NOW).outcome == "Failed"
    idle = _figures(100, shadow_requests=3)
    assert analyse(analysis, idle, mode="shadow", now=NOW).outcome == "Held"


def test_prometheus_checks_within_their_range() -> None:
    analysis = Analysis.model_validate(
        {
            "minRequests": 1,
            "prometheus": [
                {"name": "error-budget", "query": "x", "max": 0.01},
                {"name": "throughput", "query": "y", "min": 5},
            ],
        }
    )
    good = analyse(
        analysis, _figures(10), mode="live", queries={"error-budget": 0.0, "throughput": 9}, now=NOW
    )
    assert good.outcome == "Passed"
    assert good.queries == {"error-budget": 0.0, "throughput": 9}
    bad = analyse(
        analysis, _figures(10), mode="live", queries={"error-budget": 0.5, "throughput": 9}, now=NOW
    )
    assert bad.outcome == "Failed"
    assert bad.message == "Prometheus check error-budget=0.5 above max 0.01"
    # No data is a quiet interval: held, never failed.
    empty = analyse(analysis, _figures(10), mode="live", queries={"throughput": 9}, now=NOW)
    assert empty.outcome == "Held"
    assert empty.message == "Prometheus checks without data: error-budget: step held"
    # Without a Prometheus (no values at all) the checks are not run.
    assert analyse(analysis, _figures(10), mode="live", now=NOW).outcome == "Passed"


def test_drift_between_the_versions_predictions() -> None:
    analysis = Analysis(min_requests=1, drift_max=0.2)
    stable = {"predictions=0": 50, "predictions=1": 50}
    alike = IntervalFigures(
        requests=100, errors=0, candidate_predictions={"predictions=0": 45, "predictions=1": 55},
        stable_predictions=stable,
    )  # fmt: skip
    result = analyse(analysis, alike, mode="live", now=NOW)
    assert (result.outcome, result.drift) == ("Passed", 0.05)
    skewed = IntervalFigures(
        requests=100, errors=0, candidate_predictions={"predictions=0": 100},
        stable_predictions=stable,
    )  # fmt: skip
    result = analyse(analysis, skewed, mode="live", now=NOW)
    assert result.outcome == "Failed"
    assert result.message == "prediction drift 0.500 above driftMax 0.2"
    # Nothing to compare (a regressor, an unreadable server): drift is not judged.
    unknown = IntervalFigures(requests=100, errors=0)
    assert analyse(analysis, unknown, mode="live", now=NOW).drift is None
    assert analyse(analysis, unknown, mode="live", now=NOW).outcome == "Passed"


@pytest.mark.parametrize(
    ("figures", "outcome", "rates"),
    [
        # Every request refused (a broken input schema) where the stable answers: failed.
        (IntervalFigures(requests=100, errors=0, client_errors=100, stable_requests=100),
         "Failed", (1.0, 0.0)),
        # The clients send bad requests to both versions alike: not the candidate's fault.
        (IntervalFigures(requests=100, errors=0, client_errors=10, stable_requests=100,
                         stable_client_errors=10), "Passed", (0.1, 0.1)),
        # Without the stable's figure only 5xx count.
        (IntervalFigures(requests=100, errors=0, client_errors=100), "Passed", (1.0, None)),
    ],
)  # fmt: skip
def test_client_errors_count_only_beyond_the_stables_rate(
    figures: IntervalFigures, outcome: str, rates: tuple[float, float | None]
) -> None:
    result = analyse(STRICT, figures, mode="live", now=NOW)
    assert result.outcome == outcome
    assert (result.client_error_rate, result.stable_client_error_rate) == rates
    if outcome == "Failed":
        assert result.message is not None
        assert "4xx rate 1.000, stable's 0.000" in result.message


def test_client_errors_are_deltas_too() -> None:
    baseline = CounterSample(requests=10, client_errors=2, stable_requests=50)
    current = CounterSample(
        requests=110, client_errors=52, stable_requests=150, stable_client_errors=0
    )
    figures = interval_figures(baseline, current)
    assert (figures.client_errors, figures.stable_requests) == (50, 100)
    assert figures.success_rate == pytest.approx(0.5)
