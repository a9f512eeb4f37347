"""TrainingJob end to end: pods run by the node agent, a real MLflow run, real S3."""

from __future__ import annotations

import json
import shlex
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlcycle.dev.cluster import LocalStack
from tests.builders import a_training_job
from tests.harness import (
    REPO_ROOT,
    Kubectl,
    RunningOperator,
    event_reasons,
    eventually,
    operator_in_thread,
    scrape,
)
from tests.integration.objects import apply, find, in_phase, wait_for_phase

pytestmark = pytest.mark.integration

TERMINAL = ("Succeeded", "Failed")


def _mlflow(stack: LocalStack) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.env()["MLFLOW_TRACKING_URI"])


def test_iris_trains_logs_to_mlflow_and_registers_when_gates_pass(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(manifest))
    status = wait_for_phase(kubectl, namespace, "trainingjob", "iris", *TERMINAL, timeout=180)
    assert status["phase"] == "Succeeded", status
    assert status["metrics"]["accuracy"] >= 0.9
    assert status["startTime"]
    assert status["completionTime"]
    run = _mlflow(stack).get_run(status["mlflowRunId"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlcycle.dev/uid"]
    assert run.data.params["max_iter"] == "200"
    assert status["mlflowRunUrl"].endswith(f"/runs/{status['mlflowRunId']}")
    # MLflow 3 records a logged model as its own entity whose artifacts sit in the S3 store.
    models = _mlflow(stack).search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{status['mlflowRunId']}'",
    )
    assert [m.name for m in models] == ["model"]
    version_name = status["registeredModelVersion"]
    model_version = find(kubectl, namespace, "modelversion", version_name)
    assert model_version is not None
    assert model_version["spec"]["modelName"] == "iris"
    # The run, not the TrainingJob, is the source: the TrainingJob may expire by its TTL.
    assert model_version["spec"]["source"]["run"] == {
        "runId": status["mlflowRunId"],
        "artifactPath": "model",
    }
    assert model_version["spec"]["aliases"] == ["challenger"]

    def registered() -> dict[str, Any] | None:
        found = find(kubectl, namespace, "modelversion", version_name) or {}
        registered_status: dict[str, Any] = found.get("status") or {}
        return registered_status if registered_status.get("phase") == "Ready" else None

    registry_status = eventually("the ModelVersion Ready in MLflow", registered, timeout=90)
    aliases = _mlflow(stack).get_registered_model("iris").aliases
    assert aliases["challenger"] == registry_status["version"]
    # Lineage back to the data: the dataset input the operator logged on the run.
    assert registry_status["lineage"]["runId"] == status["mlflowRunId"]
    assert registry_status["lineage"]["trainingJob"] == "iris"
    assert registry_status["lineage"]["dataset"]["uri"] == "sklearn://datasets/iris"
    assert status["primaryMetric"] == f"accuracy={status['metrics']['accuracy']:.4g}"
    printed = kubectl("get", "trainingjob", "iris", "-n", namespace).stdout
    assert "METRIC" in printed
    assert status["primaryMetric"] in printed
    # Each transition is announced once, however many triggers raced to observe it.
    reasons = event_reasons(kubectl, namespace, "TrainingJob", "iris")
    for reason in ("RunBound", "Completed", "ModelRegistered"):
        assert reasons[reason] == 1, reasons
    exposition = scrape(operator.url)
    assert 'mlcycle_trainingjobs{phase="Succeeded"} 1.0' in exposition
    assert 'mlcycle_training_duration_seconds_count{result="Succeeded"} 1.0' in exposition


def test_failing_script_fails_with_exit_code_and_message_and_the_run_fails(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    apply(
        kubectl,
        namespace,
        a_training_job("crash")
        .command("python", "-c", "import sys; print('loss went NaN'); sys.exit(3)")
        .backoff_limit(0)
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "trainingjob", "crash", *TERMINAL, timeout=120)
    assert status["phase"] == "Failed"
    assert "3" in status["failureMessage"]
    assert "loss went NaN" in status["failureMessage"]
    assert _mlflow(stack).get_run(status["mlflowRunId"]).info.status == "FAILED"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True"
    reason = status["failureReason"]
    assert f'mlcycle_trainingjob_failures_total{{reason="{reason}"}} 1.0' in scrape(operator.url)
    assert event_reasons(kubectl, namespace, "TrainingJob", "crash")[reason] == 1


def test_out_of_memory_fails_with_oomkilled_and_the_run_fails(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    hog = "b = []\nwhile True:\n    b.append(bytearray(16 * 1024 * 1024))\n"
    apply(
        kubectl,
        namespace,
        a_training_job("hog")
        .command("python", "-c", hog)
        .backoff_limit(0)
        .spec(resources={"limits": {"memory": "200Mi"}})
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "trainingjob", "hog", *TERMINAL, timeout=120)
    assert status["phase"] == "Failed"
    assert status["failureReason"] == "OOMKilled", status
    assert _mlflow(stack).get_run(status["mlflowRunId"]).info.status == "FAILED"


def test_pods_stuck_pending_fail_at_the_startup_deadline(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    apply(
        kubectl,
        namespace,
        a_training_job("stuck")
        .command("python", "-c", "pass")
        .startup_deadline(3)
        .spec(podTemplate={"nodeSelector": {"mlcycle.dev/no-such-node": "true"}})
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "trainingjob", "stuck", *TERMINAL, timeout=120)
    assert status["phase"] == "Failed"
    assert status["failureReason"] == "StartupDeadlineExceeded", status
    assert "Unschedulable" in status["failureMessage"] or "schedul" in status["failureMessage"]
    # Failing fast also frees the queue: no Job keeps a pod waiting for a node.
    eventually(
        "the stuck Job to be deleted",
        lambda: find(kubectl, namespace, "job", status["jobName"]) is None,
        timeout=30,
    )
    assert _mlflow(stack).get_run(status["mlflowRunId"]).info.status == "FAILED"


def test_suspend_and_resume_follow_the_job_and_the_printer_columns(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    apply(
        kubectl,
        namespace,
        a_training_job("paused").command("python", "-c", "pass").suspended().manifest(),
    )
    eventually(
        "paused Suspended",
        lambda: in_phase(kubectl, namespace, "trainingjob", "paused", "Suspended"),
        timeout=60,
    )
    job = find(kubectl, namespace, "job", "paused")
    assert job is not None
    assert job["spec"]["suspend"] is True
    assert "Suspended" in kubectl("get", "trainingjob", "paused", "-n", namespace).stdout
    kubectl(
        "patch", "trainingjob", "paused", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"suspend":false}}',
    )  # fmt: skip
    status = wait_for_phase(kubectl, namespace, "trainingjob", "paused", *TERMINAL, timeout=120)
    assert status["phase"] == "Succeeded"
    suspended = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "False"
    assert "Succeeded" in kubectl("get", "trainingjob", "paused", "-n", namespace).stdout


def test_queued_training_waits_for_kueue_admission(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    apply(
        kubectl,
        namespace,
        a_training_job("queued").command("python", "-c", "pass").queue("gpu-queue").manifest(),
    )
    job = eventually(
        "a suspended Job labelled for Kueue",
        lambda: find(kubectl, namespace, "job", "queued"),
        timeout=60,
    )
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert job["spec"]["suspend"] is True

    def not_admitted() -> dict[str, Any] | None:
        status = (find(kubectl, namespace, "trainingjob", "queued") or {}).get("status") or {}
        admitted = [c for c in status.get("conditions", []) if c["type"] == "Admitted"]
        return status if admitted and admitted[0]["status"] == "False" else None

    eventually("Admitted=False while queued", not_admitted, timeout=30)
    # What Kueue does when the workload fits its quota: unsuspend the Job.
    kubectl(
        "patch", "job", "queued", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"suspend":false}}',
    )  # fmt: skip
    status = wait_for_phase(kubectl, namespace, "trainingjob", "queued", *TERMINAL, timeout=120)
    assert status["phase"] == "Succeeded"
    admitted = next(c for c in status["conditions"] if c["type"] == "Admitted")
    assert admitted["status"] == "True"


def test_deadline_exceeded_kills_the_run(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    apply(
        kubectl,
        namespace,
        a_training_job("slow")
        .command("python", "-c", "import time; time.sleep(600)")
        .spec(activeDeadlineSeconds=3)
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "trainingjob", "slow", *TERMINAL, timeout=120)
    assert status["phase"] == "Failed"
    assert status["failureReason"] == "DeadlineExceeded"
    assert _mlflow(stack).get_run(status["mlflowRunId"]).info.status == "KILLED"


def test_gates_not_met_say_which_metric_missed_and_register_nothing(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    script = "import mlflow\nwith mlflow.start_run():\n    mlflow.log_metric('accuracy', 0.5)\n"
    apply(
        kubectl,
        namespace,
        a_training_job("weak")
        .command("python", "-c", script)
        .registration("weak", gates=[{"metric": "accuracy", "op": ">=", "value": 0.9}])
        .manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "trainingjob", "weak", *TERMINAL, timeout=150)
    assert status["phase"] == "Succeeded"
    assert not status.get("registeredModelVersion")
    gate = next(c for c in status["conditions"] if c["type"] == "ModelRegistered")
    assert gate["status"] == "False"
    assert "accuracy" in gate["message"]
    assert "0.9" in gate["message"]


def _champion(client: MlflowClient, model_name: str, metrics: dict[str, float]) -> str:
    """Registers a version of `model_name` from a run that logged `metrics` and makes it
    `@champion`; returns its version."""
    experiment_id = client.create_experiment(f"champions-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(model_name)
    version = client.create_model_version(
        model_name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias(model_name, "champion", version.version)
    return str(version.version)


def test_the_champion_gate_compares_with_the_real_champion_and_refuses_a_missing_metric(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    client = _mlflow(stack)
    suffix = uuid.uuid4().hex[:6]
    scored, unscored = f"scored-{suffix}", f"unscored-{suffix}"
    _champion(client, scored, {"accuracy": 0.9})
    unscored_version = _champion(client, unscored, {"loss": 0.3})

    def train(name: str, model_name: str, accuracy: float, **register: Any) -> None:
        script = (
            "import mlflow\nwith mlflow.start_run():\n"
            f"    mlflow.log_metric('accuracy', {accuracy})\n"
        )
        register |= {"modelName": model_name, "compareTo": "@champion", "compareMetric": "accuracy"}
        apply(
            kubectl,
            namespace,
            a_training_job(name).command("python", "-c", script).spec(register=register).manifest(),
        )

    train("beats", scored, 0.95)
    train("trails", scored, 0.85)
    train("nothing-to-beat", unscored, 0.95)

    def gate(name: str) -> dict[str, Any]:
        status = wait_for_phase(kubectl, namespace, "trainingjob", name, *TERMINAL, timeout=180)
        assert status["phase"] == "Succeeded", status
        condition = eventually(
            f"ModelRegistered on {name}",
            lambda: next(
                (
                    c
                    for c in (find(kubectl, namespace, "trainingjob", name) or {})
                    .get("status", {})
                    .get("conditions", [])
                    if c["type"] == "ModelRegistered"
                ),
                None,
            ),
        )
        return dict(condition, registered=status.get("registeredModelVersion"))

    beats = gate("beats")
    assert beats["status"] == "True", beats
    assert beats["registered"]
    trails = gate("trails")
    assert (trails["status"], trails["reason"]) == ("False", "GatesNotMet"), trails
    assert not trails["registered"]
    assert "accuracy 0.85 is not > champion (@champion" in trails["message"], trails["message"]
    assert "0.9 (short by 0.05)" in trails["message"], trails["message"]
    missing = gate("nothing-to-beat")
    assert (missing["status"], missing["reason"]) == ("False", "ChampionMetricMissing"), missing
    assert not missing["registered"]
    assert f"version {unscored_version}" in missing["message"]
    assert "did not log accuracy" in missing["message"], missing["message"]
    assert "onMissing" in missing["message"]
    train("opted-in", unscored, 0.95, onMissing="pass")
    opted_in = gate("opted-in")
    assert opted_in["status"] == "True", opted_in
    assert opted_in["registered"]
    # One Event for the refusal, however many triggers observed it.
    assert (
        event_reasons(kubectl, namespace, "TrainingJob", "nothing-to-beat")["ChampionMetricMissing"]
        == 1
    )


# Each rank reports its environment as its termination message, which the test reads back
# from the pods' status; with `fail_once` rank 1 of the first attempt fails (a gang restart).
_RANK_SCRIPT = (
    "import os, sys, json\n"
    "env = {k: os.environ[k] for k in ('MASTER_ADDR','MASTER_PORT','WORLD_SIZE','RANK')}\n"
    "print(env)\n"
    "marker = sys.argv[1] if len(sys.argv) > 1 else ''\n"
    "if marker and env['RANK'] == '1' and not os.path.exists(marker):\n"
    "    open(marker, 'w').close()\n"
    "    sys.exit(3)\n"
    "with open(os.environ['MLCYCLE_TERMINATION_MESSAGE_PATH'], 'w') as out:\n"
    "    json.dump(env, out)\n"
    "sys.exit(0 if env['WORLD_SIZE'] == '2' else 7)\n"
)


def _reported_env(kubectl: Kubectl, namespace: str, job_name: str) -> list[dict[str, str]]:
    pods = json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job_name}", "-o", "json").stdout
    )["items"]
    return [
        json.loads(status["state"]["terminated"]["message"])
        for pod in pods
        for status in pod["status"].get("containerStatuses", [])
        if pod["status"].get("phase") == "Succeeded"
    ]


def test_two_workers_get_the_distributed_environment(
    kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    apply(
        kubectl,
        namespace,
        a_training_job("gang").command("python", "-c", _RANK_SCRIPT).workers(2).manifest(),
    )
    status = wait_for_phase(kubectl, namespace, "trainingjob", "gang", *TERMINAL, timeout=120)
    assert status["phase"] == "Succeeded", status
    job = find(kubectl, namespace, "job", status["jobName"])
    assert job is not None
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 2
    assert find(kubectl, namespace, "service", "gang") is not None
    reported = _reported_env(kubectl, namespace, "gang")
    assert sorted(env["RANK"] for env in reported) == ["0", "1"], reported
    assert {env["MASTER_ADDR"] for env in reported} == {"gang-0.gang"}


def test_a_gang_restart_gets_its_own_headless_service(
    kubectl: Kubectl, namespace: str, operator: RunningOperator, tmp_path: Path
) -> None:
    marker = str(tmp_path / "rank-1-failed-once")
    command = ["python", "-c", _RANK_SCRIPT, marker]
    apply(kubectl, namespace, a_training_job("regang").workers(2).spec(command=command).manifest())
    status = wait_for_phase(kubectl, namespace, "trainingjob", "regang", *TERMINAL, timeout=120)
    assert status["phase"] == "Succeeded", status
    assert status["jobName"] == "regang-r1"
    # MASTER_ADDR of the new attempt names its own Service: without it the name of rank 0
    # does not resolve on a real cluster.
    service = find(kubectl, namespace, "service", "regang-r1")
    assert service is not None
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"]["mlcycle.dev/attempt"] == "1"
    reported = _reported_env(kubectl, namespace, "regang-r1")
    assert sorted(env["RANK"] for env in reported) == ["0", "1"], reported
    assert {env["MASTER_ADDR"] for env in reported} == {"regang-r1-0.regang-r1"}


def test_deleting_the_trainingjob_removes_job_and_pods_and_kills_the_run(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    apply(
        kubectl,
        namespace,
        a_training_job("doomed").command("python", "-c", "import time; time.sleep(600)").manifest(),
    )

    def running() -> dict[str, Any] | None:
        tj = find(kubectl, namespace, "trainingjob", "doomed") or {}
        status: dict[str, Any] = tj.get("status") or {}
        return status if status.get("phase") == "Running" else None

    status = eventually("TrainingJob doomed Running", running, timeout=90)
    kubectl("delete", "trainingjob", "doomed", "-n", namespace, "--wait=true", "--timeout=60s")
    eventually(
        "the Job and its pods to be garbage-collected",
        lambda: (
            find(kubectl, namespace, "job", status["jobName"]) is None
            and "doomed" not in kubectl("get", "pods", "-n", namespace, "-o", "name").stdout
        ),
        timeout=60,
    )
    assert _mlflow(stack).get_run(status["mlflowRunId"]).info.status == "KILLED"


def test_operator_restart_mid_run_creates_no_second_run_or_job(
    stack: LocalStack, kubectl: Kubectl, namespace: str
) -> None:
    with operator_in_thread([namespace]):
        apply(
            kubectl,
            namespace,
            a_training_job("steady")
            .command("python", "-c", "import time; time.sleep(8)")
            .manifest(),
        )
        eventually(
            "a Job for steady",
            lambda: find(kubectl, namespace, "job", "steady"),
            timeout=60,
        )
    with operator_in_thread([namespace]):
        status = wait_for_phase(kubectl, namespace, "trainingjob", "steady", *TERMINAL, timeout=120)
    assert status["phase"] == "Succeeded"
    jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["steady"]
    runs = _mlflow(stack).search_runs(
        experiment_ids=[
            _mlflow(stack).get_experiment_by_name(namespace).experiment_id  # type: ignore[union-attr]
        ],
        filter_string="tags.`mlcycle.dev/name` = 'steady'",
    )
    assert len(runs) == 1


def test_mlflow_outage_holds_the_training_with_a_condition_then_it_runs_once(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    stack.stop_mlflow()
    try:
        apply(
            kubectl,
            namespace,
            a_training_job("patient").command("python", "-c", "pass").manifest(),
        )

        def unavailable() -> dict[str, Any] | None:
            status = (find(kubectl, namespace, "trainingjob", "patient") or {}).get("status") or {}
            tracking = [c for c in status.get("conditions", []) if c["type"] == "TrackingReady"]
            return status if tracking and tracking[0]["reason"] == "MLflowUnavailable" else None

        eventually("TrackingReady=False MLflowUnavailable", unavailable, timeout=60)
        # No pod may start before its run exists: the run id is what it logs into.
        assert find(kubectl, namespace, "job", "patient") is None
    finally:
        stack.start_mlflow()
    # Backoff doubles per failed attempt (capped at 5 min), so the wait after MLflow is back
    # depends on how long it took to come back.
    status = wait_for_phase(kubectl, namespace, "trainingjob", "patient", *TERMINAL, timeout=360)
    assert status["phase"] == "Succeeded"
    assert event_reasons(kubectl, namespace, "TrainingJob", "patient")["MLflowUnavailable"] == 1
    runs = _mlflow(stack).search_runs(
        experiment_ids=[
            _mlflow(stack).get_experiment_by_name(namespace).experiment_id  # type: ignore[union-attr]
        ],
        filter_string="tags.`mlcycle.dev/name` = 'patient'",
    )
    assert len(runs) == 1


def test_a_refused_job_is_a_condition_and_runs_once_the_quota_allows_it(
    stack: LocalStack, kubectl: Kubectl, namespace: str, operator: RunningOperator
) -> None:
    """What the schema cannot see (here a ResourceQuota of no Jobs) becomes a condition and
    one Event, retried with backoff, and the training runs when the cause goes away."""
    kubectl("create", "quota", "no-jobs", "--hard=count/jobs.batch=0", "-n", namespace)
    eventually(
        "the quota counted by the controller-manager",
        lambda: (
            (find(kubectl, namespace, "resourcequota", "no-jobs") or {})
            .get("status", {})
            .get("hard")
        ),
    )
    apply(
        kubectl,
        namespace,
        a_training_job("quota").command("python", "-c", "pass").manifest(),
    )

    def refused() -> dict[str, Any] | None:
        status = (find(kubectl, namespace, "trainingjob", "quota") or {}).get("status") or {}
        found = [c for c in status.get("conditions", []) if c["type"] == "ChildrenApplied"]
        return found[0] if found and found[0]["status"] == "False" else None

    condition = eventually("the Job refused", refused, timeout=60)
    assert condition["reason"] == "JobRefused"
    assert "quota" in condition["message"]
    time.sleep(4)  # a few retries: still one Event, no Job
    assert event_reasons(kubectl, namespace, "TrainingJob", "quota")["JobRefused"] == 1
    assert not json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"]

    kubectl("delete", "quota", "no-jobs", "-n", namespace)
    status = wait_for_phase(kubectl, namespace, "trainingjob", "quota", *TERMINAL, timeout=180)
    assert status["phase"] == "Succeeded"
    applied = next(c for c in status["conditions"] if c["type"] == "ChildrenApplied")
    assert (applied["status"], applied["reason"]) == ("True", "Applied")


def test_the_run_records_image_command_code_version_and_the_ui_link(
    stack: LocalStack, kubectl: Kubectl, namespace: str
) -> None:
    """What reproduces the run is on the run, where the MLflow UI shows Source and User; the
    status links to the UI at its external address, not at the in-cluster tracking URI."""
    commit = "3f2a9c1e5b7d4a6f8e0c2b4d6a8f0e1c3b5d7f9a"
    ui = "https://mlflow.example.com/ui"
    code = "import mlflow; mlflow.start_run(); mlflow.log_metric('loss', 0.5)"
    with operator_in_thread([namespace], mlflow_ui_url=ui):
        traced = a_training_job("traced").command("python", "-c", code)
        git = [
            {"name": "GIT_COMMIT", "value": commit},
            {"name": "GIT_REPO_URL", "value": "https://github.com/acme/iris.git"},
        ]
        apply(kubectl, namespace, traced.spec(env=git).manifest())
        status = wait_for_phase(kubectl, namespace, "trainingjob", "traced", *TERMINAL, timeout=120)
    assert status["phase"] == "Succeeded", status
    run_id = status["mlflowRunId"]
    tags = _mlflow(stack).get_run(run_id).data.tags
    assert tags["mlcycle.dev/image"] == "example/train:1"
    assert tags["mlcycle.dev/command"] == shlex.join(["python", "-c", code])
    assert tags["mlcycle.dev/git-commit"] == commit
    # MLflow's own system tags: the UI's Source, its git commit and User columns.
    assert tags["mlflow.source.type"] == "JOB"
    assert tags["mlflow.source.name"] == "example/train:1"
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.repoURL"] == "https://github.com/acme/iris.git"
    assert tags["mlflow.user"] == f"system:serviceaccount:{namespace}:default"
    experiment = status["mlflowExperimentId"]
    assert status["mlflowRunUrl"] == f"{ui}/#/experiments/{experiment}/runs/{run_id}"
