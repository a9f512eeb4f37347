"""Operator configuration from the command line, and the reconcile metrics."""

from __future__ import annotations

import pytest

from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.cli import build_parser
from mlcycle.config import OperatorConfig

pytestmark = pytest.mark.unit


def test_namespaces_are_deduplicated_and_empty_means_cluster_wide() -> None:
    assert OperatorConfig().clusterwide
    scoped = OperatorConfig(namespaces=["b", "a", "b"])
    assert scoped.namespaces == ["a", "b"]
    assert not scoped.clusterwide


def test_replicas_get_distinct_priorities_by_default() -> None:
    priorities = {OperatorConfig().priority for _ in range(50)}
    assert len(priorities) == 50


def test_run_flags_parse_repeated_and_comma_separated_namespaces() -> None:
    args = build_parser().parse_args(["run", "-n", "a,b", "--namespace", "c", "--priority", "7"])
    assert args.namespace == ["a,b", "c"]
    assert args.priority == 7


def test_credentials_in_the_tracking_uri_stay_with_the_operator() -> None:
    config = OperatorConfig(mlflow_tracking_uri="https://op:p%40ss-1@mlflow.example:5000/")
    assert config.mlflow_tracking_uri == "https://mlflow.example:5000/"
    assert config.mlflow_basic_auth is not None
    username, password = config.mlflow_basic_auth
    assert (username, password.get_secret_value()) == ("op", "p@ss-1")
    assert "p@ss-1" not in repr(config)
    assert "p%40ss-1" not in repr(config)
    plain = OperatorConfig(mlflow_tracking_uri="http://mlflow:5000")
    assert (plain.mlflow_tracking_uri, plain.mlflow_basic_auth) == ("http://mlflow:5000", None)


def test_the_pods_credentials_secret_comes_from_a_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = build_parser().parse_args(["run", "--mlflow-credentials-secret", "mlflow-creds"])
    assert args.mlflow_credentials_secret == "mlflow-creds"
    monkeypatch.setenv("MLCYCLE_MLFLOW_CREDENTIALS_SECRET", "from-env")
    assert build_parser().parse_args(["run"]).mlflow_credentials_secret == "from-env"
    with pytest.raises(ValueError, match="mlflow_credentials_secret"):
        OperatorConfig(mlflow_credentials_secret="Not A Name")


def test_invalid_log_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log_level"):
        OperatorConfig(log_level="LOUD")


def _sample(metrics: OperatorMetrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_reconcile_metrics_count_results_errors_and_durations() -> None:
    metrics = OperatorMetrics()
    with metrics.reconciling("TrainingJob"):
        pass
    with pytest.raises(RuntimeError), metrics.reconciling("TrainingJob"):
        raise RuntimeError("boom")
    kind = {"kind": "TrainingJob"}
    assert _sample(metrics, "mlcycle_reconcile_total", {**kind, "result": "success"}) == 1
    assert _sample(metrics, "mlcycle_reconcile_total", {**kind, "result": "error"}) == 1
    errors = {**kind, "reason": "RuntimeError"}
    assert _sample(metrics, "mlcycle_reconcile_errors_total", errors) == 1
    assert _sample(metrics, "mlcycle_reconcile_duration_seconds_count", kind) == 2
    assert b"mlcycle_reconcile_total" in metrics.exposition()
