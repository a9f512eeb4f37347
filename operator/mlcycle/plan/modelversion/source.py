"""Where a ModelVersion's model comes from: the run it names or its TrainingJob's run, a
URI, or a version registered elsewhere, and the lineage each one records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from mlcycle.api.v1alpha1.modelversion import Lineage, ModelVersion
from mlcycle.api.v1alpha1.trainingjob import DatasetRef, TrainingJob
from mlcycle.plan import reasons
from mlcycle.plan.modelversion.version import RegistryVersion

DEFAULT_ARTIFACT_PATH: Final = "model"
_RUN_RUNNING: Final = frozenset({"RUNNING", "SCHEDULED"})


class SourceRunView(Protocol):
    """A run as registration and lineage need it."""

    @property
    def run_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def experiment_id(self) -> str: ...
    @property
    def dataset_uri(self) -> str | None: ...
    @property
    def dataset_digest(self) -> str | None: ...
    @property
    def dataset_version(self) -> str | None: ...
    @property
    def training_job(self) -> str | None: ...


@dataclass(frozen=True)
class RunRef:
    """A run to register from, and what is known about it before MLflow is asked."""

    run_id: str
    artifact_path: str
    training_job: str | None = None
    dataset: DatasetRef | None = None


@dataclass(frozen=True)
class ResolvedSource:
    uri: str
    run_id: str | None
    model_id: str | None
    lineage: Lineage


@dataclass(frozen=True)
class SourceBlocked:
    """Registration cannot start: waiting for the source (`failed` False) or it is gone."""

    reason: str
    message: str
    failed: bool


def run_ref(mv: ModelVersion, training_job: TrainingJob | None) -> RunRef | SourceBlocked | None:
    """The run `mv` registers from, or why there is none yet; None for uri/version sources."""
    source = mv.spec.source
    if source.run is not None:
        return RunRef(source.run.run_id, source.run.artifact_path)
    if source.training_job_ref is None:
        return None
    name = source.training_job_ref.name
    if training_job is None:
        return SourceBlocked(
            reasons.TRAINING_JOB_NOT_FOUND,
            f"TrainingJob {name} does not exist in namespace {mv.metadata.namespace}",
            failed=False,  # GitOps may apply the TrainingJob after its ModelVersion
        )
    status = training_job.status
    phase = status.phase if status is not None else None
    if phase == "Failed":
        why = status.failure_reason if status is not None else None
        return SourceBlocked(
            reasons.TRAINING_JOB_FAILED, f"TrainingJob {name} failed ({why})", failed=True
        )
    if phase != "Succeeded" or status is None or not status.mlflow_run_id:
        return SourceBlocked(
            reasons.WAITING_FOR_TRAINING_JOB,
            f"waiting for TrainingJob {name} to succeed (phase {phase or 'Pending'})",
            failed=False,
        )
    registration = training_job.spec.registration
    return RunRef(
        run_id=status.mlflow_run_id,
        artifact_path=registration.artifact_path if registration else DEFAULT_ARTIFACT_PATH,
        training_job=name,
        dataset=training_job.spec.dataset,
    )


def resolve_run(
    ref: RunRef, run: SourceRunView | None, logged_model_id: str | None
) -> ResolvedSource | SourceBlocked:
    """Register an MLflow 3 LoggedModel by id when the run logged one under the artifact
    path's name (`log_model(name="model")`), else the classic run artifact directory."""
    if run is None:
        return SourceBlocked(
            reasons.RUN_NOT_FOUND, f"MLflow run {ref.run_id} does not exist", failed=True
        )
    if run.status in _RUN_RUNNING:
        return SourceBlocked(
            reasons.WAITING_FOR_RUN,
            f"waiting for MLflow run {ref.run_id} to finish (status {run.status})",
            failed=False,
        )
    if run.status != "FINISHED":
        return SourceBlocked(
            reasons.RUN_FAILED, f"MLflow run {ref.run_id} ended {run.status}", failed=True
        )
    dataset = ref.dataset
    if dataset is None and run.dataset_uri and "://" in run.dataset_uri:
        dataset = DatasetRef(
            uri=run.dataset_uri, digest=run.dataset_digest, version=run.dataset_version
        )
    uri = (
        f"models:/{logged_model_id}"
        if logged_model_id
        else f"runs:/{ref.run_id}/{ref.artifact_path}"
    )
    lineage = Lineage(
        training_job=ref.training_job or run.training_job,
        run_id=ref.run_id,
        experiment_id=run.experiment_id,
        logged_model_id=logged_model_id,
        dataset=dataset,
    )
    return ResolvedSource(uri, ref.run_id, logged_model_id, lineage)


def uri_source(uri: str) -> ResolvedSource:
    return ResolvedSource(uri, None, None, Lineage())


def adopted_source(version: RegistryVersion) -> ResolvedSource:
    """What a version registered elsewhere (or recorded before a lost status write) says."""
    lineage = Lineage(run_id=version.run_id, logged_model_id=version.model_id)
    return ResolvedSource(version.source, version.run_id, version.model_id, lineage)
