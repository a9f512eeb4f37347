"""TrainingJob metrics: the phase gauge follows objects, durations and failures on finish."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from mlcycle.adapters.metrics import TrainingMetrics

pytestmark = pytest.mark.unit


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_phase_gauge_moves_objects_between_phases_and_forgets_deleted_ones() -> None:
    registry = CollectorRegistry()
    metrics = TrainingMetrics(registry)
    metrics.observe_phase("a", "Pending")
    metrics.observe_phase("b", "Pending")
    metrics.observe_phase("a", "Running")
    assert _value(registry, "mlcycle_trainingjobs", phase="Pending") == 1
    assert _value(registry, "mlcycle_trainingjobs", phase="Running") == 1
    metrics.observe_phase("a", None)  # not yet observed: keeps what was known
    assert _value(registry, "mlcycle_trainingjobs", phase="Running") == 1
    metrics.forget("a")
    metrics.forget("never-seen")
    assert _value(registry, "mlcycle_trainingjobs", phase="Running") == 0
    assert _value(registry, "mlcycle_trainingjobs", phase="Pending") == 1


def test_finished_trainings_record_duration_and_failure_reason() -> None:
    registry = CollectorRegistry()
    metrics = TrainingMetrics(registry)
    metrics.finished("Succeeded", None, 42.0)
    metrics.finished("Failed", "OOMKilled", 7.0)
    metrics.finished("Failed", None, None)
    count = "mlcycle_training_duration_seconds_count"
    assert _value(registry, count, result="Succeeded") == 1
    assert _value(registry, count, result="Failed") == 1
    assert _value(registry, "mlcycle_training_duration_seconds_sum", result="Succeeded") == 42
    failures = "mlcycle_trainingjob_failures_total"
    assert _value(registry, failures, reason="OOMKilled") == 1
    assert _value(registry, failures, reason="Unknown") == 1
    assert _value(registry, failures, reason="DeadlineExceeded") is None
