"""The analysis adapter reads what the data plane actually exposes: expositions made by
the router's and the model server's own metrics classes, parsed and summed."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlcycle.adapters.servingmetrics import backend_sample, predicted_classes, server_sample
from mlcycle.dataplane.router.metrics import RouterMetrics
from mlcycle.dataplane.server.metrics import ServerMetrics
from mlcycle.dataplane.server.source import ModelIdentity
from mlcycle.plan.inferenceservice.analysis import interval_figures, prediction_drift

pytestmark = pytest.mark.unit


def _router_exposition(requests: list[tuple[str, str, int, float]]) -> str:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    for backend, version, code, seconds in requests:
        metrics.observe_request("iris", backend, version, code, seconds)
    metrics.observe_shadow("iris", "canary", "ok")
    metrics.observe_shadow("iris", "canary", "error")
    metrics.observe_comparison("iris", "canary", agreed=True)
    metrics.observe_comparison("iris", "other-service", agreed=False)
    return generate_latest(registry).decode()


def test_candidate_counters_are_summed_over_routers_for_its_version_only() -> None:
    first = _router_exposition(
        [("canary", "2", 200, 0.01), ("canary", "2", 503, 0.2), ("stable", "1", 200, 0.01)]
    )
    second = _router_exposition(
        [("canary", "2", 200, 0.02), ("canary", "3", 200, 0.02), ("canary", "2", 400, 0.001)]
    )
    sample = backend_sample([first, second], "iris", "canary", "2")
    assert (sample.requests, sample.errors, sample.client_errors) == (4, 1, 1)
    assert sample.latency_buckets["+Inf"] == 4
    assert sample.latency_buckets["0.01"] == 2
    assert (sample.shadow_requests, sample.shadow_failures) == (4, 2)
    assert (sample.shadow_comparisons, sample.shadow_agreements) == (2, 2)
    figures = interval_figures(None, sample)
    assert figures.success_rate == pytest.approx(3 / 4)  # a 4xx alone is not a failure
    assert figures.latency_quantile(0.5) is not None


def _server_exposition(version: str, classes: list[int]) -> str:
    metrics = ServerMetrics(ModelIdentity("iris", version))
    metrics.observe_batch(len(classes), np.array(classes), True, ["predictions"])
    return metrics.exposition().decode()


def test_predicted_classes_and_their_drift() -> None:
    stable = predicted_classes([_server_exposition("1", [0, 1, 2, 2])], "iris", "1")
    assert stable == {"predictions=0": 1, "predictions=1": 1, "predictions=2": 2}
    same = predicted_classes([_server_exposition("2", [0, 1, 2, 2])], "iris", "2")
    assert prediction_drift(same, stable) == 0
    collapsed = predicted_classes([_server_exposition("3", [0, 0, 0, 0])], "iris", "3")
    assert prediction_drift(collapsed, stable) == pytest.approx(0.75)
    assert predicted_classes([_server_exposition("3", [0])], "iris", "2") == {}
    assert prediction_drift({}, stable) is None


def test_a_versions_requests_are_summed_over_its_model_servers() -> None:
    def exposition(version: str, requests: list[tuple[str, int, float]]) -> str:
        metrics = ServerMetrics(ModelIdentity("iris", version))
        for protocol, code, seconds in requests:
            metrics.observe_request(protocol, code, seconds)
        return generate_latest(metrics.registry).decode()

    first = exposition("2", [("v2", 200, 0.004), ("mlflow", 500, 0.2)])
    second = exposition("2", [("v2", 200, 0.004), ("v2", 400, 0.004)])
    other = exposition("1", [("v2", 500, 0.004)])
    sample = server_sample([first, second, other], "iris", "2")
    assert (sample.requests, sample.errors, sample.client_errors) == (4, 1, 1)
    figures = interval_figures(None, sample)
    assert figures.success_rate == 0.75
    p99 = figures.latency_quantile(0.99)
    assert p99 is not None
    assert p99 > 0.1  # the slow 500 is in the tail
