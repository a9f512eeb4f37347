"""Operator metrics in Prometheus exposition format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class OperatorMetrics:
    """One registry per operator instance, so two in-process operators in a test never mix."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "mlcycle_reconcile_total",
            "Reconciliations by kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "mlcycle_reconcile_errors_total",
            "Reconciliations that ended in an error, by kind and reason.",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlcycle_reconcile_duration_seconds",
            "Time spent in one reconciliation, by kind.",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.training = TrainingMetrics(self.registry)
        self.registration = RegistrationMetrics(self.registry)
        self.rollouts = RolloutMetrics(self.registry)

    @contextmanager
    def reconciling(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception as error:
            self.reconciles.labels(kind=kind, result="error").inc()
            self.errors.labels(kind=kind, reason=type(error).__name__).inc()
            raise
        else:
            self.reconciles.labels(kind=kind, result="success").inc()
        finally:
            self.duration.labels(kind=kind).observe(time.perf_counter() - started)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


TRAINING_PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed")


class TrainingMetrics:
    """TrainingJobs by phase, how long trainings take and why they fail.

    The phase gauge counts the objects this replica reconciles (the leader sees them all),
    kept from the phase each reconcile observed rather than by listing on every scrape.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._phases: dict[str, str] = {}
        self.by_phase = Gauge(
            "mlcycle_trainingjobs",
            "TrainingJobs by phase.",
            ["phase"],
            registry=registry,
        )
        for phase in TRAINING_PHASES:
            self.by_phase.labels(phase=phase).set(0)
        self.duration = Histogram(
            "mlcycle_training_duration_seconds",
            "Start to completion of finished trainings, by result.",
            ["result"],
            registry=registry,
            buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
        )
        self.failures = Counter(
            "mlcycle_trainingjob_failures_total",
            "Failed trainings by reason (OOMKilled, DeadlineExceeded, ExitCode, ...).",
            ["reason"],
            registry=registry,
        )

    def observe_phase(self, uid: str, phase: str | None) -> None:
        if phase is None or self._phases.get(uid) == phase:
            return
        self._phases[uid] = phase
        self._recount()

    def forget(self, uid: str) -> None:
        if self._phases.pop(uid, None) is not None:
            self._recount()

    def finished(self, phase: str, reason: str | None, duration_seconds: float | None) -> None:
        if duration_seconds is not None:
            self.duration.labels(result=phase).observe(max(duration_seconds, 0.0))
        if phase == "Failed":
            self.failures.labels(reason=reason or "Unknown").inc()

    def _recount(self) -> None:
        counts = dict.fromkeys(TRAINING_PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.by_phase.labels(phase=phase).set(count)


REGISTRATION_RESULTS = ("created", "adopted", "failed")


class RegistrationMetrics:
    """ModelVersion registrations by result, and how long an object takes to be Ready."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registrations = Counter(
            "mlcycle_modelversion_registrations_total",
            "ModelVersion registrations by result: created (a new MLflow version), adopted"
            " (an existing version), failed.",
            ["result"],
            registry=registry,
        )
        for result in REGISTRATION_RESULTS:
            self.registrations.labels(result=result)
        self.latency = Histogram(
            "mlcycle_modelversion_registration_latency_seconds",
            "ModelVersion creation to Ready (the MLflow version READY, tags and aliases set).",
            registry=registry,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )

    def registered(self, result: str) -> None:
        self.registrations.labels(result=result).inc()

    def ready(self, seconds: float) -> None:
        self.latency.observe(max(seconds, 0.0))


ROLLOUT_OUTCOMES = ("Promoted", "RolledBack", "Aborted")
ANALYSIS_OUTCOMES = ("Passed", "Failed", "Held")


class RolloutMetrics:
    """InferenceService rollouts: outcomes, durations, analysis verdicts, canary weights."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rollouts = Counter(
            "mlcycle_rollouts_total",
            "Finished rollouts by outcome (Promoted, RolledBack, Aborted).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ROLLOUT_OUTCOMES:
            self.rollouts.labels(outcome=outcome)
        self.duration = Histogram(
            "mlcycle_rollout_duration_seconds",
            "Start of a rollout to its promotion, rollback or abort, by outcome.",
            ["outcome"],
            registry=registry,
            buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
        )
        self.analyses = Counter(
            "mlcycle_rollout_analysis_total",
            "Canary analysis verdicts by outcome (Passed, Failed, Held).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ANALYSIS_OUTCOMES:
            self.analyses.labels(outcome=outcome)
        self.canary_weight = Gauge(
            "mlcycle_canary_weight_percent",
            "Live traffic share of each InferenceService's candidate, in percent.",
            ["namespace", "name"],
            registry=registry,
        )

    def finished(self, outcome: str, duration_seconds: float | None) -> None:
        self.rollouts.labels(outcome=outcome).inc()
        if duration_seconds is not None:
            self.duration.labels(outcome=outcome).observe(max(duration_seconds, 0.0))

    def analysed(self, outcome: str) -> None:
        self.analyses.labels(outcome=outcome).inc()

    def weight(self, namespace: str, name: str, percent: int) -> None:
        self.canary_weight.labels(namespace=namespace, name=name).set(percent)

    def forget(self, namespace: str, name: str) -> None:
        with suppress(KeyError):
            self.canary_weight.remove(namespace, name)
