"""The model server's Prometheus metrics, labelled by model name and version.

Besides the serving figures (requests by code, latency, batch sizes, load time) the server
counts what the model answers — classes per output for classifiers, a value histogram per
output for regressors — so a rollout can compare a candidate's predictions with the
stable version's, not only its error rate.

Nothing is labelled with an identity that is not resolved yet: a server started on
`models:/name@alias` labels nothing until the alias has been resolved to a version, so
no `version=""` series stands beside the real one (in multiprocess mode a series, once
written, cannot be taken back). Requests answered before that (503s while resolving) are
counted by whoever routed them, not here.

With several worker processes, values live in prometheus-client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the process entry before any worker imports
prometheus_client) and /metrics of any worker aggregates all of them.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from mlcycle.dataplane.server.source import ModelIdentity

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Regression outputs have no natural scale: a few decades from zero cover most. Buckets stay
# non-negative because prometheus-client drops a histogram's _sum (and so the mean) when
# any bucket bound is negative; negative predictions land in the first bucket.
DEFAULT_PREDICTION_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0,
                              250.0, 500.0, 1000.0, 10000.0)  # fmt: skip
# Label values are bounded: a model answering free text must not grow the series forever.
MAX_CLASSES_PER_OUTPUT = 50
OTHER_CLASS = "__other__"
# A value histogram per column of a wide output (embeddings) would cost more than predict.
MAX_VALUE_COLUMNS = 16
DEFAULT_OUTPUT = "predictions"
SMALL_BATCH_ROWS = 64


def _columns(output: Any, names: Sequence[str]) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """(output label, 1-D values) for each output column of a prediction."""
    if isinstance(output, pd.DataFrame):
        for column in output.columns:
            yield str(column), output[column].to_numpy()
        return
    if isinstance(output, dict):
        for key, value in output.items():
            yield from _columns(value, [str(key)])
        return
    array = output.to_numpy() if isinstance(output, pd.Series) else np.asarray(output)
    name = names[0] if len(names) == 1 else DEFAULT_OUTPUT
    if array.ndim <= 1:
        yield name, array.reshape(-1)
    elif array.ndim == 2 and array.shape[1] <= MAX_VALUE_COLUMNS:
        for index in range(array.shape[1]):
            yield (
                (names[index] if len(names) == array.shape[1] else f"{name}_{index}"),
                array[:, index],
            )


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        identity: ModelIdentity,
        prediction_buckets: Sequence[float] = DEFAULT_PREDICTION_BUCKETS,
    ) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV) or None
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        self.requests = Counter(
            "mlcycle_model_requests_total",
            "Requests by protocol and HTTP status code.",
            [*labels, "protocol", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mlcycle_model_request_duration_seconds",
            "Time from request received to response sent, by protocol.",
            [*labels, "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_size = Histogram(
            "mlcycle_model_batch_size",
            "Rows per predict call (micro-batches of concurrent requests).",
            labels,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self._load_seconds = Gauge(
            "mlcycle_model_load_seconds",
            "Time taken to resolve, download and load the model.",
            labels,
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlcycle_model_predictions_total",
            "Predicted classes, by output (classifiers).",
            [*labels, "output", "class"],
            registry=self.registry,
        )
        self.prediction_values = Histogram(
            "mlcycle_model_prediction_value",
            "Predicted values, by output (regressors).",
            [*labels, "output"],
            buckets=tuple(prediction_buckets),
            registry=self.registry,
        )
        self.identify(identity)

    def identify(self, identity: ModelIdentity) -> None:
        """Label what follows with this identity (an alias resolved to its version)."""
        self.resolved = identity.resolved
        self._labels = {"model": identity.name, "version": identity.version}
        if identity.resolved:
            self.batch_size = self._batch_size.labels(**self._labels)
            self.load_seconds = self._load_seconds.labels(**self._labels)
        # Children are looked up once per label combination: labels() costs more than inc().
        self._request_children: dict[tuple[str, int], Any] = {}
        self._duration_children: dict[str, Any] = {}
        self._class_children: dict[tuple[str, str], Any] = {}
        self._classes_seen: dict[str, int] = {}
        self._value_children: dict[str, Any] = {}

    def observe_request(self, protocol: str, code: int, seconds: float) -> None:
        if not self.resolved:
            return
        counter = self._request_children.get((protocol, code))
        if counter is None:
            counter = self.requests.labels(**self._labels, protocol=protocol, code=str(code))
            self._request_children[(protocol, code)] = counter
        counter.inc()
        histogram = self._duration_children.get(protocol)
        if histogram is None:
            histogram = self.duration.labels(**self._labels, protocol=protocol)
            self._duration_children[protocol] = histogram
        histogram.observe(seconds)

    def observe_batch(
        self, rows: int, output: Any, is_classifier: bool | None, output_names: Sequence[str]
    ) -> None:
        self.batch_size.observe(rows)
        for name, values in _columns(output, output_names):
            numeric = values.dtype.kind in "fiub"
            as_classes = is_classifier if is_classifier is not None and numeric else None
            if as_classes is None:
                as_classes = values.dtype.kind != "f"
            if as_classes:
                self._count_classes(name, values)
            else:
                self._observe_values(name, values)

    def _count_classes(self, output: str, values: np.ndarray[Any, Any]) -> None:
        if values.dtype.kind == "O":
            values = values.astype(str)
        # Profiled: np.unique costs more than the predict of a small batch; a Counter over
        # the Python values is several times cheaper up to a few dozen rows.
        if values.size <= SMALL_BATCH_ROWS:
            counted: Iterable[tuple[Any, int]] = collections.Counter(values.tolist()).items()
        else:
            classes, counts = np.unique(values, return_counts=True)
            counted = zip(classes.tolist(), counts.tolist(), strict=True)
        for value, count in counted:
            key = (output, str(value))
            counter = self._class_children.get(key)
            if counter is None:
                seen = self._classes_seen.get(output, 0)
                if seen < MAX_CLASSES_PER_OUTPUT:
                    self._classes_seen[output] = seen + 1
                else:
                    key = (output, OTHER_CLASS)
                counter = self._class_children.get(key) or self.predictions.labels(
                    **self._labels, output=output, **{"class": key[1]}
                )
                self._class_children[key] = counter
            counter.inc(count)

    def _observe_values(self, output: str, values: np.ndarray[Any, Any]) -> None:
        histogram = self._value_children.get(output)
        if histogram is None:
            histogram = self.prediction_values.labels(**self._labels, output=output)
            self._value_children[output] = histogram
        for value in values.astype(np.float64, copy=False).tolist():
            histogram.observe(value)

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        aggregated = CollectorRegistry()
        MultiProcessCollector(aggregated, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(aggregated)
