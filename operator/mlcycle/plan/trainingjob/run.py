"""The MLflow run a TrainingJob logs into: its experiment and name, the tags it is created
with, and its page in the MLflow UI."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Final

from mlcycle.api.redaction import redact_url
from mlcycle.api.v1alpha1.trainingjob import TrainingJob


@dataclass(frozen=True)
class RunBinding:
    """The MLflow run the training pods log into, created before the pods start."""

    run_id: str
    experiment_id: str
    experiment_name: str
    tracking_uri: str
    credentials_secret: str | None = None
    """Secret in the TrainingJob's namespace with MLflow credentials for the pods."""


def experiment_name(tj: TrainingJob) -> str:
    if tj.spec.mlflow is not None and tj.spec.mlflow.experiment_name:
        return tj.spec.mlflow.experiment_name
    return str(tj.metadata.namespace)


def run_name(tj: TrainingJob) -> str:
    if tj.spec.mlflow is not None and tj.spec.mlflow.run_name:
        return tj.spec.mlflow.run_name
    return str(tj.metadata.name)


def mlflow_run_url(run: RunBinding, ui_url: str | None = None) -> str | None:
    """The run's page in the MLflow UI: at `ui_url` (`--mlflow-ui-url`, the address users
    reach, which the in-cluster tracking URI often is not), else at the tracking URI when
    that is the UI's own address."""
    base = ui_url or run.tracking_uri
    if not base.startswith(("http://", "https://")):
        return None
    base = redact_url(base).rstrip("/")
    return f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}"


GIT_COMMIT_ENV: Final = "GIT_COMMIT"
"""A literal `spec.env` entry naming the commit of the training code (CI sets it when it
builds the image or writes the manifest)."""
GIT_REPO_URL_ENV: Final = "GIT_REPO_URL"
# MLflow refuses run tag values longer than this.
_TAG_VALUE_LIMIT: Final = 8000


def _literal_env(tj: TrainingJob, name: str) -> str | None:
    return next((env.value for env in tj.spec.env if env.name == name and env.value), None)


def run_tags(tj: TrainingJob) -> dict[str, str]:
    """The tags the run is created with: which object owns it, and what reproduces it (image,
    command, code version), also as MLflow's own system tags so its UI shows Source, the
    git commit and User. The user is the Kubernetes identity the training runs as: the
    object does not record who created it."""
    overlay = tj.spec.pod_template
    account = (overlay.service_account_name if overlay else None) or "default"
    namespace = str(tj.metadata.namespace)
    tags = {
        "mlcycle.dev/namespace": namespace,
        "mlcycle.dev/name": str(tj.metadata.name),
        "mlcycle.dev/kind": "TrainingJob",
        "mlcycle.dev/image": tj.spec.image,
        "mlflow.source.type": "JOB",
        "mlflow.source.name": tj.spec.image,
        "mlflow.user": f"system:serviceaccount:{namespace}:{account}",
    }
    command = [*tj.spec.command, *tj.spec.args]
    if command:
        tags["mlcycle.dev/command"] = shlex.join(command)
    commit = _literal_env(tj, GIT_COMMIT_ENV)
    if commit:
        tags["mlcycle.dev/git-commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    repo = _literal_env(tj, GIT_REPO_URL_ENV)
    if repo:
        tags["mlflow.source.git.repoURL"] = repo
    return {key: value[:_TAG_VALUE_LIMIT] for key, value in tags.items()}
