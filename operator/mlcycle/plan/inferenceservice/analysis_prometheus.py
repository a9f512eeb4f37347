"""The analysis' Prometheus checks: each query's value against its [min, max] range.

Pure: the values were queried already (adapters.prometheus); None is "no data" — an empty
result, or NaN from a ratio over no requests — which holds the step rather than failing it,
as too few requests do: a quiet interval says nothing against the candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mlcycle.api.v1alpha1.inferenceservice import PrometheusCheck

CheckVerdict = Literal["Passed", "Failed", "Held"]


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    outcome: CheckVerdict
    value: float | None
    message: str
    """`p95-latency=0.31 above max 0.25`: the check, its value and the bound it crossed."""


def evaluate_prometheus_checks(
    checks: Sequence[PrometheusCheck], values: Mapping[str, float | None]
) -> list[CheckOutcome]:
    """One outcome per check, in the checks' order; a check without a value is held."""
    return [_evaluate(check, values.get(check.name)) for check in checks]


def overall_outcome(outcomes: Sequence[CheckOutcome]) -> CheckVerdict:
    """Failed if any check failed, else Held if any had no data, else Passed."""
    verdicts = {outcome.outcome for outcome in outcomes}
    if "Failed" in verdicts:
        return "Failed"
    return "Held" if "Held" in verdicts else "Passed"


def measured_values(outcomes: Sequence[CheckOutcome]) -> dict[str, float]:
    """The values that were measured, by check name (for `lastAnalysis.queries`)."""
    return {outcome.name: outcome.value for outcome in outcomes if outcome.value is not None}


def _evaluate(check: PrometheusCheck, value: float | None) -> CheckOutcome:
    if value is None:
        return CheckOutcome(check.name, "Held", None, f"{check.name}: no data")
    measured = f"{check.name}={_number(value)}"
    if check.minimum is not None and not value >= check.minimum:
        return CheckOutcome(
            check.name, "Failed", value, f"{measured} below min {_number(check.minimum)}"
        )
    if check.maximum is not None and not value <= check.maximum:
        return CheckOutcome(
            check.name, "Failed", value, f"{measured} above max {_number(check.maximum)}"
        )
    return CheckOutcome(check.name, "Passed", value, f"{measured} within {_range(check)}")


def _range(check: PrometheusCheck) -> str:
    if check.minimum is not None and check.maximum is not None:
        return f"[{_number(check.minimum)}, {_number(check.maximum)}]"
    if check.minimum is not None:
        return f"min {_number(check.minimum)}"
    return f"max {_number(check.maximum)}"


def _number(value: float | None) -> str:
    # Six significant digits: 0.31 stays 0.31, 1234567.8 becomes 1.23457e+06.
    return f"{value:.6g}"
