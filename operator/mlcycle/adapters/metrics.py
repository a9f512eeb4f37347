"""Operator metrics in Prometheus exposition format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
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
