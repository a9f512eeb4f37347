"""Prometheus checks of the rollout analysis: value against range, no data holds."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlcycle.api.v1alpha1.inferenceservice import PrometheusCheck
from mlcycle.plan.inferenceservice.analysis_prometheus import (
    CheckOutcome,
    evaluate_prometheus_checks,
    measured_values,
    overall_outcome,
)

pytestmark = pytest.mark.unit


def _check(name: str = "p95-latency", **bounds: Any) -> PrometheusCheck:
    return PrometheusCheck.model_validate({"name": name, "query": "some_query", **bounds})


@pytest.mark.parametrize(
    ("bounds", "value", "outcome", "message"),
    [
        ({"max": 0.25}, 0.31, "Failed", "p95-latency=0.31 above max 0.25"),
        ({"max": 0.25}, 0.25, "Passed", "p95-latency=0.25 within max 0.25"),
        ({"max": 0.25}, 0.1, "Passed", "p95-latency=0.1 within max 0.25"),
        ({"min": 0.99}, 0.95, "Failed", "p95-latency=0.95 below min 0.99"),
        ({"min": 0.99}, 0.995, "Passed", "p95-latency=0.995 within min 0.99"),
        ({"min": 1, "max": 5}, 0.5, "Failed", "p95-latency=0.5 below min 1"),
        ({"min": 1, "max": 5}, 7, "Failed", "p95-latency=7 above max 5"),
        ({"min": 1, "max": 5}, 3, "Passed", "p95-latency=3 within [1, 5]"),
        ({"max": 0.25}, math.inf, "Failed", "p95-latency=inf above max 0.25"),
        ({"min": 0}, -math.inf, "Failed", "p95-latency=-inf below min 0"),
        ({"max": 0.25}, None, "Held", "p95-latency: no data"),
        ({"max": 1e6}, 1234567.8, "Failed", "p95-latency=1.23457e+06 above max 1e+06"),
    ],
)
def test_check_against_its_range(
    bounds: dict[str, Any], value: float | None, outcome: str, message: str
) -> None:
    [result] = evaluate_prometheus_checks([_check(**bounds)], {"p95-latency": value})
    assert result == CheckOutcome("p95-latency", outcome, value, message)  # type: ignore[arg-type]


def test_a_check_nobody_measured_is_held_not_failed() -> None:
    [result] = evaluate_prometheus_checks([_check(max=1)], {})
    assert result.outcome == "Held"
    assert result.message == "p95-latency: no data"


def test_outcomes_keep_the_checks_order_and_combine() -> None:
    checks = [
        _check("error-rate", max=0.01),
        _check("p95-latency", max=0.25),
        _check("throughput", min=1),
    ]
    outcomes = evaluate_prometheus_checks(
        checks, {"error-rate": 0.001, "p95-latency": None, "throughput": 4.0}
    )
    assert [outcome.name for outcome in outcomes] == ["error-rate", "p95-latency", "throughput"]
    assert overall_outcome(outcomes) == "Held"
    assert measured_values(outcomes) == {"error-rate": 0.001, "throughput": 4.0}

    failing = evaluate_prometheus_checks(
        checks, {"error-rate": 0.2, "p95-latency": None, "throughput": 4.0}
    )
    assert overall_outcome(failing) == "Failed"
    assert [outcome.message for outcome in failing if outcome.outcome == "Failed"] == [
        "error-rate=0.2 above max 0.01"
    ]
    passing = evaluate_prometheus_checks(
        checks, {"error-rate": 0.0, "p95-latency": 0.1, "throughput": 4.0}
    )
    assert overall_outcome(passing) == "Passed"
    assert overall_outcome([]) == "Passed"
