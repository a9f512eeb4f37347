"""The MLflow tracking adapter against the stack's real MLflow server (SQLite, proxied S3)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow.entities import DatasetInput as MlflowDatasetInput
from mlflow.entities import Metric, Run, ViewType
from mlflow.tracking import MlflowClient

from mlcycle.adapters.errors import InvalidError, NotFoundError, UnavailableError
from mlcycle.adapters.mlflowclient import UID_TAG
from mlcycle.adapters.tracking import DatasetInput, MlflowTracking, RunRecord
from mlcycle.dev.processes import free_port

pytestmark = pytest.mark.integration

LONG_DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def tracking_uri(stack: object) -> str:
    return str(stack.env()["MLFLOW_TRACKING_URI"])  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tracking(tracking_uri: str) -> MlflowTracking:
    return MlflowTracking(tracking_uri)


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> MlflowClient:
    """A plain MLflow client, as the training pod or a person would use."""
    return MlflowClient(tracking_uri=tracking_uri)


@pytest.fixture
def experiment_name() -> str:
    return f"tracking-{uuid.uuid4().hex[:10]}"


def ensure_run(
    tracking: MlflowTracking,
    experiment_name: str,
    owner_uid: str,
    *,
    params: dict[str, str] | None = None,
    dataset: DatasetInput | None = None,
) -> RunRecord:
    return tracking.ensure_run(
        experiment_name=experiment_name,
        run_name="iris-train",
        owner_uid=owner_uid,
        owner_tags={
            "mlcycle.dev/namespace": "team-a",
            "mlcycle.dev/name": "iris",
            "mlcycle.dev/kind": "TrainingJob",
        },
        extra_tags={"team": "vision"},
        params=params if params is not None else {"learning_rate": "0.1", "max_depth": "4"},
        dataset=dataset,
    )


def runs_tagged(
    client: MlflowClient, experiment_id: str, owner_uid: str, view: int
) -> list[object]:
    return list(
        client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{UID_TAG}` = '{owner_uid}'",
            run_view_type=view,
        )
    )


def dataset_inputs_of(run: Run) -> list[MlflowDatasetInput]:
    assert run.inputs is not None, f"run {run.info.run_id} came back without inputs"
    return list(run.inputs.dataset_inputs)


def test_ensure_run_twice_makes_one_run_with_tags_params_and_dataset(
    tracking: MlflowTracking, client: MlflowClient, experiment_name: str
) -> None:
    owner_uid = str(uuid.uuid4())
    dataset = DatasetInput(uri="s3://datasets/iris/iris.csv", digest=LONG_DIGEST, version="v3")

    first = ensure_run(tracking, experiment_name, owner_uid, dataset=dataset)
    # The spec is immutable, so a second call never means new values: what was logged first
    # stays, and MLflow (which refuses changing a param) is not asked to change it.
    second = ensure_run(
        tracking, experiment_name, owner_uid, dataset=dataset, params={"learning_rate": "0.5"}
    )

    assert second.run_id == first.run_id
    assert first.status == "RUNNING"
    assert first.artifact_uri.startswith("mlflow-artifacts:/")
    assert len(runs_tagged(client, first.experiment_id, owner_uid, ViewType.ALL)) == 1
    run = client.get_run(first.run_id)
    assert run.info.run_name == "iris-train"
    assert run.data.params == {"learning_rate": "0.1", "max_depth": "4"}
    assert {key: run.data.tags[key] for key in (UID_TAG, "mlcycle.dev/kind", "team")} == {
        UID_TAG: owner_uid,
        "mlcycle.dev/kind": "TrainingJob",
        "team": "vision",
    }
    assert run.data.tags["mlcycle.dev/namespace"] == "team-a"
    assert run.data.tags["mlcycle.dev/name"] == "iris"
    assert len(dataset_inputs_of(run)) == 1
    logged = dataset_inputs_of(run)[0]
    assert logged.dataset.name == "iris.csv"
    assert logged.dataset.digest == LONG_DIGEST[:36]
    assert logged.dataset.source_type == "s3"
    assert json.loads(logged.dataset.source) == {"uri": "s3://datasets/iris/iris.csv"}
    assert {tag.key: tag.value for tag in logged.tags}["mlcycle.dev/dataset-version"] == "v3"


def test_ensure_run_completes_a_run_left_behind_by_a_crash(
    tracking: MlflowTracking, client: MlflowClient, experiment_name: str
) -> None:
    """A crash right after create_run leaves a tagged run without params or dataset."""
    owner_uid = str(uuid.uuid4())
    experiment_id = tracking.ensure_experiment(experiment_name)
    orphan = client.create_run(experiment_id, tags={UID_TAG: owner_uid})

    record = ensure_run(
        tracking, experiment_name, owner_uid, dataset=DatasetInput(uri="https://data.example/x")
    )

    assert record.run_id == orphan.info.run_id
    assert len(runs_tagged(client, experiment_id, owner_uid, ViewType.ALL)) == 1
    run = client.get_run(orphan.info.run_id)
    assert run.data.params == {"learning_rate": "0.1", "max_depth": "4"}
    assert [item.dataset.source_type for item in dataset_inputs_of(run)] == ["uri"]


class LaggingSearch(MlflowTracking):
    """An adapter whose first search misses runs committed just before it, as a search that
    lags behind writes (a replica, a cache, a concurrent creator) would."""

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri)
        self.searches = 0

    def _runs_of(self, experiment_id: str, owner_uid: str) -> list[Any]:
        self.searches += 1
        return [] if self.searches == 1 else super()._runs_of(experiment_id, owner_uid)


def test_a_duplicate_created_after_a_lagging_search_is_deleted_for_the_older_run(
    tracking_uri: str, client: MlflowClient, experiment_name: str
) -> None:
    owner_uid = str(uuid.uuid4())
    lagging = LaggingSearch(tracking_uri)
    experiment_id = lagging.ensure_experiment(experiment_name)
    older = client.create_run(experiment_id, tags={UID_TAG: owner_uid}, start_time=1)

    record = ensure_run(lagging, experiment_name, owner_uid)

    assert lagging.searches == 2
    assert record.run_id == older.info.run_id
    tagged = runs_tagged(client, experiment_id, owner_uid, ViewType.ALL)
    stages = {run.info.run_id: run.info.lifecycle_stage for run in tagged}  # type: ignore[attr-defined]
    assert len(stages) == 2
    assert stages.pop(older.info.run_id) == "active"
    assert list(stages.values()) == ["deleted"]
    # The kept run got what the lost create would have carried.
    assert client.get_run(older.info.run_id).data.params["max_depth"] == "4"
    # And a later, non-lagging call settles on the same run.
    assert ensure_run(MlflowTracking(tracking_uri), experiment_name, owner_uid) == record


def test_experiment_created_by_racing_reconciles_resolves_to_one(
    tracking: MlflowTracking, experiment_name: str
) -> None:
    racers = 8
    start = threading.Barrier(racers)

    def racer() -> str:
        start.wait(timeout=30)
        return tracking.ensure_experiment(experiment_name)

    with ThreadPoolExecutor(racers) as pool:
        futures = [pool.submit(racer) for _ in range(racers)]
        experiment_ids = {future.result(timeout=60) for future in futures}

    assert len(experiment_ids) == 1


def test_reconciles_completing_the_same_run_at_once_all_succeed(
    tracking: MlflowTracking, client: MlflowClient, experiment_name: str
) -> None:
    """MLflow's SQL store checks, then inserts a param: racing writers of the same value hit
    a UNIQUE constraint, which must not surface as an error when the value is there."""
    owner_uid = str(uuid.uuid4())
    experiment_id = tracking.ensure_experiment(experiment_name)
    orphan = client.create_run(experiment_id, tags={UID_TAG: owner_uid})
    params = {f"p{index}": str(index) for index in range(40)}
    dataset = DatasetInput(uri="s3://datasets/race.csv", digest="d1")
    racers = 8
    start = threading.Barrier(racers)

    def racer() -> RunRecord:
        start.wait(timeout=30)
        return ensure_run(tracking, experiment_name, owner_uid, params=params, dataset=dataset)

    with ThreadPoolExecutor(racers) as pool:
        records = [
            future.result(timeout=60) for future in [pool.submit(racer) for _ in range(racers)]
        ]

    assert {record.run_id for record in records} == {orphan.info.run_id}
    run = client.get_run(orphan.info.run_id)
    assert run.data.params == params
    assert len(dataset_inputs_of(run)) == 1


def test_a_deleted_run_of_a_live_owner_is_restored_not_duplicated(
    tracking: MlflowTracking, client: MlflowClient, experiment_name: str
) -> None:
    owner_uid = str(uuid.uuid4())
    first = ensure_run(tracking, experiment_name, owner_uid)
    client.delete_run(first.run_id)

    again = ensure_run(tracking, experiment_name, owner_uid)

    assert again.run_id == first.run_id
    assert client.get_run(first.run_id).info.lifecycle_stage == "active"
    assert len(runs_tagged(client, first.experiment_id, owner_uid, ViewType.ALL)) == 1


def test_terminate_run_sets_status_once_and_keeps_end_time(
    tracking: MlflowTracking,
    client: MlflowClient,
    experiment_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    finished = ensure_run(tracking, experiment_name, str(uuid.uuid4()))
    failed = ensure_run(tracking, experiment_name, str(uuid.uuid4()))

    tracking.terminate_run(finished.run_id, "FINISHED")
    end_time = client.get_run(finished.run_id).info.end_time
    time.sleep(0.05)
    tracking.terminate_run(finished.run_id, "FINISHED")
    tracking.terminate_run(failed.run_id, "FAILED")
    tracking.terminate_run(failed.run_id, "FAILED")

    info = client.get_run(finished.run_id).info
    assert (info.status, info.end_time) == ("FINISHED", end_time)
    assert end_time is not None
    assert end_time >= finished.start_time_ms
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert tracking.get_run(failed.run_id).status == "FAILED"

    # The training code ended its run FINISHED, then the pod was OOM-killed: the operator's
    # outcome wins and the training code's end time stays.
    tracking.terminate_run(finished.run_id, "FAILED")
    info = client.get_run(finished.run_id).info
    assert (info.status, info.end_time) == ("FAILED", end_time)
    # MLflow prints "View run … at <tracking URI>" on terminate unless told not to.
    assert "View run" not in capsys.readouterr().out

    # Someone deleted the run by hand: nothing left to close, and no error loop.
    client.delete_run(failed.run_id)
    tracking.terminate_run(failed.run_id, "KILLED")


def test_final_metrics_are_the_latest_values_logged_by_the_training_code(
    tracking: MlflowTracking, client: MlflowClient, experiment_name: str
) -> None:
    record = ensure_run(tracking, experiment_name, str(uuid.uuid4()))
    now_ms = int(time.time() * 1000)
    client.log_batch(
        record.run_id,
        metrics=[
            Metric("loss", 0.9, now_ms, 0),
            Metric("loss", 0.2, now_ms + 1, 5),
            Metric("accuracy", 0.5, now_ms, 0),
            Metric("accuracy", 0.93, now_ms + 1, 5),
        ],
    )

    snapshot = tracking.get_run(record.run_id)
    assert snapshot.metrics == {"loss": 0.2, "accuracy": 0.93}
    assert snapshot.params["learning_rate"] == "0.1"
    assert snapshot.tags["team"] == "vision"
    assert snapshot.status == "RUNNING"
    # Finishing reads the same final values and closes the run in one go.
    assert tracking.finish_run(record.run_id, "FINISHED") == {"loss": 0.2, "accuracy": 0.93}
    assert tracking.get_run(record.run_id).status == "FINISHED"


def test_artifacts_logged_by_a_client_reach_s3_through_the_mlflow_proxy(
    stack: object,
    tracking: MlflowTracking,
    client: MlflowClient,
    experiment_name: str,
    tmp_path: Path,
) -> None:
    record = ensure_run(tracking, experiment_name, str(uuid.uuid4()))
    notes = tmp_path / "notes.txt"
    notes.write_text("trained on iris\n")

    client.log_artifact(record.run_id, str(notes))

    assert tracking.get_run(record.run_id).artifact_uri.startswith("mlflow-artifacts:/")
    env = stack.env()  # type: ignore[attr-defined]
    s3 = boto3.client(
        "s3",
        endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    listing = s3.list_objects_v2(Bucket="mlflow", Prefix="artifacts/")
    keys = [item["Key"] for item in listing.get("Contents", [])]
    wanted = f"/{record.run_id}/artifacts/notes.txt"
    matches = [key for key in keys if key.endswith(wanted)]
    assert matches, f"no S3 object ending in {wanted}; saw {keys[:20]}"
    body = s3.get_object(Bucket="mlflow", Key=matches[0])["Body"].read()
    assert body == b"trained on iris\n"


def test_unreachable_mlflow_fails_fast_without_leaking_credentials() -> None:
    adapter = MlflowTracking(f"http://operator:s3cr3t@127.0.0.1:{free_port()}")
    started = time.monotonic()

    with pytest.raises(UnavailableError) as raised:
        ensure_run(adapter, "anything", str(uuid.uuid4()))

    assert time.monotonic() - started < 15
    assert raised.value.service == "mlflow"
    assert "connection refused" in str(raised.value)
    assert "s3cr3t" not in str(raised.value)
    assert "operator" not in str(raised.value)
    assert raised.value.__cause__ is None  # kopf logs causes; MLflow's carry the URL


def test_not_found_and_invalid_are_told_apart(
    tracking: MlflowTracking, client: MlflowClient, experiment_name: str
) -> None:
    with pytest.raises(NotFoundError, match="get run"):
        tracking.get_run("0" * 32)
    with pytest.raises(InvalidError, match="log params"):
        ensure_run(tracking, experiment_name, str(uuid.uuid4()), params={"bad key!": "1"})
    deleted = f"{experiment_name}-deleted"
    client.delete_experiment(client.create_experiment(deleted))
    with pytest.raises(InvalidError, match="deleted"):
        tracking.ensure_experiment(deleted)


def test_champion_reads_the_run_behind_the_alias(
    tracking: MlflowTracking, client: MlflowClient, experiment_name: str
) -> None:
    model_name = f"iris-{uuid.uuid4().hex[:8]}"
    champion = ensure_run(tracking, experiment_name, str(uuid.uuid4()))
    client.log_metric(champion.run_id, "accuracy", 0.91)
    client.create_registered_model(model_name)
    version = client.create_model_version(
        model_name, f"runs:/{champion.run_id}/model", run_id=champion.run_id
    )
    client.set_registered_model_alias(model_name, "champion", version.version)
    from_uri = client.create_model_version(model_name, "s3://models/iris/1")
    client.set_registered_model_alias(model_name, "baseline", from_uri.version)

    found = tracking.champion(model_name, "champion", "accuracy")
    assert found is not None
    assert (found.version, found.run_id, found.run_found) == ("1", champion.run_id, True)
    assert found.value == pytest.approx(0.91)
    lacking = tracking.champion(model_name, "champion", "f1")
    assert lacking is not None
    assert (lacking.run_found, lacking.value) == (True, None)
    baseline = tracking.champion(model_name, "baseline", "accuracy")
    assert baseline is not None
    assert (baseline.run_id, baseline.source, baseline.value) == (None, "s3://models/iris/1", None)
    assert tracking.champion(model_name, "production", "accuracy") is None
    assert tracking.champion(f"{model_name}-missing", "champion", "accuracy") is None


def test_run_url_points_at_the_ui_page_of_the_run(
    tracking: MlflowTracking, tracking_uri: str, experiment_name: str
) -> None:
    record = ensure_run(tracking, experiment_name, str(uuid.uuid4()))
    url = tracking.run_url(record.experiment_id, record.run_id)
    assert url == (
        f"{tracking_uri.rstrip('/')}/#/experiments/{record.experiment_id}/runs/{record.run_id}"
    )
