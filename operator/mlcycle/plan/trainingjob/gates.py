"""Registration gates: the metrics a training logged against the thresholds of
`register.gates` and against the `compareTo` champion, and by how much each one missed."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from mlcycle.api.v1alpha1.trainingjob import MetricGate, Registration
from mlcycle.plan import reasons

_COMPARISONS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}
_NEGATIONS: Final[Mapping[str, str]] = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!="}


class ChampionView(Protocol):
    """The version `register.compareTo` points at, as the registry reports it."""

    @property
    def version(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def source(self) -> str: ...
    @property
    def run_found(self) -> bool: ...
    @property
    def value(self) -> float | None: ...


@dataclass(frozen=True)
class GateResult:
    passed: bool
    failures: list[str] = field(default_factory=list)
    reason: str = reasons.GATES_NOT_MET
    """The `ModelRegistered` reason when refused."""


def _number(value: float) -> str:
    return f"{value:.6g}"


def _miss(metric: str, actual: float, op: str, required: float, what: str = "required") -> str:
    gap = _number(abs(required - actual))
    if op == "==":
        return f"{metric} {_number(actual)} != {what} {_number(required)} (off by {gap})"
    if op in (">", "<"):
        return f"{metric} {_number(actual)} is not {op} {what} {_number(required)} (short by {gap})"
    return (
        f"{metric} {_number(actual)} {_NEGATIONS[op]} {what} {_number(required)} (short by {gap})"
    )


def evaluate_gates(
    gates: Sequence[MetricGate],
    metrics: Mapping[str, float],
    *,
    champion: ChampionView | None = None,
    registration: Registration | None = None,
) -> GateResult:
    """Every gate must hold; each failure says which metric missed and by how much.

    `champion` is the version behind `registration.compareTo`; None means there is no
    champion yet, and the first challenger wins by default. A champion without the compare
    metric refuses the registration unless `onMissing` is `pass`: passing by default would
    let any model replace one that was never measured the same way.
    """
    reason = reasons.GATES_NOT_MET
    failures: list[str] = []
    for gate in gates:
        actual = metrics.get(gate.metric)
        if actual is None:
            failures.append(f"metric {gate.metric} was not logged")
        elif not _COMPARISONS[gate.op](actual, gate.value):
            failures.append(_miss(gate.metric, actual, gate.op, gate.value))
    if (
        registration is not None
        and registration.compare_to is not None
        and registration.compare_metric is not None
        and champion is not None
    ):
        metric, op = registration.compare_metric, registration.compare_op
        actual = metrics.get(metric)
        what = f"champion ({registration.compare_to}, version {champion.version})"
        if actual is None:
            failures.append(f"metric {metric} was not logged")
        elif champion.value is None:
            if registration.on_missing == "fail":
                reason = reasons.CHAMPION_METRIC_MISSING
                failures.append(
                    f"{what} has no {metric} to compare with: {_why_missing(champion, metric)}"
                    " (set register.onMissing: pass to register anyway)"
                )
        elif not _COMPARISONS[op](actual, champion.value):
            failures.append(_miss(metric, actual, op, champion.value, what=what))
    return GateResult(passed=not failures, failures=failures, reason=reason)


def _why_missing(champion: ChampionView, metric: str) -> str:
    if champion.run_id is None:
        return f"it was registered from {champion.source}, not from a run"
    if not champion.run_found:
        return f"its run {champion.run_id} no longer exists"
    return f"its run {champion.run_id} did not log {metric}"
