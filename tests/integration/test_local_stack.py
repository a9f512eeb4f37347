"""The local stack's MLflow and S3 are the real servers: a run's artifact, logged through
MLflow's proxied artifact access, lands as an object in the S3 store."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
from mlflow.tracking import MlflowClient

from mlcycle.dev.cluster import ARTIFACT_BUCKET, LocalStack

pytestmark = pytest.mark.integration


def test_mlflow_artifacts_land_in_the_s3_store(stack: LocalStack, tmp_path: Path) -> None:
    env = stack.env()
    mlflow = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment_id = mlflow.create_experiment(f"stack-{uuid.uuid4().hex[:8]}")
    run = mlflow.create_run(experiment_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    artifact = tmp_path / "model.txt"
    artifact.write_text("weights")
    mlflow.log_artifact(run.info.run_id, str(artifact))
    mlflow.log_metric(run.info.run_id, "accuracy", 0.93)
    mlflow.set_terminated(run.info.run_id)

    s3 = boto3.client(
        "s3",
        endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    listed = s3.list_objects_v2(Bucket=ARTIFACT_BUCKET, Prefix="artifacts/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    matching = [key for key in keys if run.info.run_id in key and key.endswith("model.txt")]
    assert matching, f"no object for run {run.info.run_id} in {keys}"
    body = s3.get_object(Bucket=ARTIFACT_BUCKET, Key=matching[0])["Body"].read()
    assert body == b"weights"
    finished = mlflow.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics["accuracy"] == pytest.approx(0.93)


def test_stack_reports_every_component_running(stack: LocalStack) -> None:
    assert stack.status() == dict.fromkeys(stack.status(), True)
