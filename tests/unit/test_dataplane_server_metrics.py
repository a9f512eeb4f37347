"""Prediction statistics: class counts for classifiers, value histograms for regressors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlcycle.dataplane.server import metrics as server_metrics
from mlcycle.dataplane.server.metrics import OTHER_CLASS, ServerMetrics
from mlcycle.dataplane.server.source import ModelIdentity

pytestmark = pytest.mark.unit


def samples(metrics: ServerMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_classes_are_counted_per_output_with_model_and_version_labels() -> None:
    metrics = ServerMetrics(ModelIdentity("iris", "2"))
    metrics.observe_batch(4, np.array([0, 2, 2, 1]), True, ())
    metrics.observe_request("mlflow", 200, 0.001)
    counted = samples(metrics, "mlcycle_model_predictions_total")
    label = (("class", "2"), ("model", "iris"), ("output", "predictions"), ("version", "2"))
    assert counted[label] == 2
    assert sum(counted.values()) == 4
    requests = samples(metrics, "mlcycle_model_requests_total")
    assert requests == {
        (("code", "200"), ("model", "iris"), ("protocol", "mlflow"), ("version", "2")): 1
    }
    assert samples(metrics, "mlcycle_model_batch_size_sum") == {
        (("model", "iris"), ("version", "2")): 4
    }


def test_regression_values_go_to_a_histogram_per_output_column() -> None:
    metrics = ServerMetrics(ModelIdentity("m", "1"))
    metrics.observe_batch(2, pd.DataFrame({"price": [1.5, 2.5], "risk": [0.1, 0.2]}), None, ())
    sums = samples(metrics, "mlcycle_model_prediction_value_sum")
    assert sums[(("model", "m"), ("output", "price"), ("version", "1"))] == pytest.approx(4.0)
    assert sums[(("model", "m"), ("output", "risk"), ("version", "1"))] == pytest.approx(0.3)


def test_class_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_metrics, "MAX_CLASSES_PER_OUTPUT", 2)
    metrics = ServerMetrics(ModelIdentity("m", "1"))
    metrics.observe_batch(4, np.array(["a", "b", "c", "d"], dtype=object), None, ())
    classes = {
        dict(k)["class"]: v for k, v in samples(metrics, "mlcycle_model_predictions_total").items()
    }
    assert classes == {"a": 1, "b": 1, OTHER_CLASS: 2}


def test_identify_relabels_what_follows() -> None:
    metrics = ServerMetrics(ModelIdentity("m", ""))
    metrics.observe_request("v2", 503, 0.001)
    metrics.identify(ModelIdentity("m", "7"))
    metrics.observe_request("v2", 200, 0.001)
    versions = {dict(k)["version"] for k in samples(metrics, "mlcycle_model_requests_total")}
    assert versions == {"", "7"}


def test_an_alias_labels_nothing_until_resolved_so_no_empty_version_series_remains() -> None:
    from mlcycle.dataplane.server.source import provisional_identity

    provisional = provisional_identity("models:/iris@champion")
    assert not provisional.resolved
    metrics = ServerMetrics(provisional)
    metrics.observe_request("v2", 503, 0.001)  # answered while the alias was being resolved
    metrics.identify(ModelIdentity("iris", "7"))
    metrics.load_seconds.set(1.5)
    metrics.observe_batch(1, np.array([1]), True, ())
    metrics.observe_request("v2", 200, 0.001)
    versions = {
        dict(labels)["version"]
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for labels in [tuple(sample.labels.items()) for sample in family.samples]
        if dict(labels).get("model") == "iris"
    }
    assert versions == {"7"}
    assert provisional_identity("models:/iris/3").resolved
    assert provisional_identity("models:/iris@champion", version_override="3").resolved
