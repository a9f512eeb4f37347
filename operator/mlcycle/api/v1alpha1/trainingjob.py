"""TrainingJob: one training run as pods, tracked in MLflow, optionally registered."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from mlcycle.api.v1alpha1.common import (
    AGE_COLUMN,
    PHASE_COLUMN,
    AliasName,
    ApiModel,
    ArtifactPath,
    CelRule,
    CrdNames,
    CustomResource,
    LabelMap,
    ListType,
    LocalObjectReference,
    MetricName,
    ModelName,
    ObjectName,
    PrinterColumn,
    StatusBase,
    WorkloadTemplate,
    immutable_except,
)

ComparisonOp = Literal[">", ">=", "<", "<=", "=="]

_HYPERPARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class MlflowRunSettings(ApiModel):
    """How the MLflow run of this training is named and tagged."""

    experiment_name: str | None = Field(None, min_length=1, max_length=500)
    """MLflow experiment; defaults to the TrainingJob's namespace."""
    run_name: str | None = Field(None, min_length=1, max_length=250)
    """Run name shown in the MLflow UI; defaults to the TrainingJob's name."""
    tags: LabelMap = Field(default_factory=dict)
    """Extra run tags, beside the ones tying the run to this TrainingJob."""


class DatasetRef(ApiModel):
    """The training data, logged as the run's dataset input for lineage."""

    uri: str = Field(min_length=1, max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://.+$")
    """Where the data lives, such as `s3://bucket/iris.csv`."""
    digest: str | None = Field(None, max_length=128)
    """Content digest of the data, when known."""
    version: str | None = Field(None, max_length=128)


class S3Access(ApiModel):
    """Direct S3 access for pods that cannot use MLflow's proxied artifact store."""

    secret_ref: LocalObjectReference
    """Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; reaches pods only
    through secretKeyRef, never status, events or logs."""
    endpoint: str | None = Field(None, max_length=2048, pattern=r"^https?://.+$")
    """S3 endpoint URL for stores other than AWS, set as MLFLOW_S3_ENDPOINT_URL."""


ExitCode = Annotated[int, Field(ge=1, le=255)]
ExitCodes = Annotated[list[ExitCode], Field(max_length=64), ListType.set()]


class FailurePolicy(ApiModel):
    """Which container exit codes are worth a retry (mapped to the Job's podFailurePolicy)."""

    cel_rules = (
        CelRule(
            rule="!has(self.retryableExitCodes) || !has(self.permanentExitCodes)"
            " || !self.retryableExitCodes.exists(c, c in self.permanentExitCodes)",
            message="an exit code cannot be both retryable and permanent",
            holds=lambda policy: (
                not set(policy.retryable_exit_codes) & set(policy.permanent_exit_codes)
            ),
        ),
    )

    retryable_exit_codes: ExitCodes = Field(default_factory=list)
    """Exit codes that count against backoffLimit and are retried."""
    permanent_exit_codes: ExitCodes = Field(default_factory=list)
    """Exit codes that fail the TrainingJob at once, without retries."""


class MetricGate(ApiModel):
    """A condition on a final run metric, such as `accuracy >= 0.9`."""

    metric: MetricName
    op: ComparisonOp
    value: float


class Registration(ApiModel):
    """Register the trained model as a ModelVersion when every gate holds."""

    cel_rules = (
        CelRule(
            rule="has(self.compareTo) == has(self.compareMetric)",
            message="compareTo and compareMetric are set together",
            holds=lambda register: (
                (register.compare_to is None) == (register.compare_metric is None)
            ),
        ),
    )

    model_name: ModelName
    """Registered model name in the MLflow Model Registry."""
    artifact_path: ArtifactPath = "model"
    """Path of the logged model inside the run's artifacts."""
    gates: Annotated[list[MetricGate], Field(max_length=32)] = Field(default_factory=list)
    """Metric conditions that must all hold for the model to be registered."""
    compare_to: str | None = Field(None, max_length=256, pattern=r"^@[A-Za-z0-9_-]+$")
    """Champion/challenger gate: an alias such as `@champion` whose version's run the new
    run must beat on `compareMetric`. Passes when the alias does not exist yet (the first
    model becomes the champion); see `onMissing` for a champion with nothing to compare."""
    compare_metric: MetricName | None = None
    compare_op: Literal[">", ">=", "<", "<="] = ">"
    """How the new run's `compareMetric` must relate to the champion's (`<` for losses)."""
    on_missing: Literal["fail", "pass"] = "fail"
    """What the champion gate does when the champion has no `compareMetric` (its run did not
    log it, was deleted, or it was registered from a URI, not a run): `fail` refuses the
    registration and says why; `pass` registers as when there is no champion yet."""
    aliases: Annotated[list[AliasName], Field(max_length=10), ListType.set()] = Field(
        default_factory=list
    )
    """Aliases to set on the registered version."""


def _valid_hyperparameter_names(hyperparameters: dict[str, str]) -> bool:
    return all(re.match(_HYPERPARAMETER_NAME, name) for name in hyperparameters)


Hyperparameters = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=6000)]],
    Field(max_length=256),
    # Names become environment variables (MLCYCLE_HP_<NAME>) and MLflow param keys.
    CelRule(
        rule=f"self.all(name, name.matches('{_HYPERPARAMETER_NAME}'))",
        message="hyperparameter names are letters, digits, '_', '.' and '-',"
        " starting with a letter or '_'",
        holds=_valid_hyperparameter_names,
    ),
]


class TrainingJobSpec(WorkloadTemplate):
    """What to train and how; immutable once created, except `suspend`."""

    image: str = Field(min_length=1, max_length=1024)
    """Container image of the training code."""
    command: Annotated[
        list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)
    ] = Field(default_factory=list)
    """Entrypoint; the image's own when empty."""
    args: Annotated[
        list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=256)
    ] = Field(default_factory=list)
    hyperparameters: Hyperparameters = Field(default_factory=dict)
    """String parameters passed to the container and logged as MLflow params."""
    mlflow: MlflowRunSettings | None = None
    dataset: DatasetRef | None = None
    s3: S3Access | None = None
    workers: int = Field(1, ge=1, le=1024)
    """Pods that train together; more than one makes an Indexed Job with torch.distributed
    variables (MASTER_ADDR, WORLD_SIZE, RANK) in every pod."""
    backoff_limit: int | None = Field(None, ge=0, le=100)
    """Retries before the training fails; a failed rank restarts the whole gang once."""
    active_deadline_seconds: int | None = Field(None, ge=1)
    """Wall-clock limit of the whole training."""
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    """Delete the TrainingJob itself this long after it finished."""
    startup_deadline_seconds: int | None = Field(None, ge=1)
    """Fail when pods stay Pending (unschedulable, image pull errors) for this long."""
    suspend: bool = False
    """Create the Job suspended, or suspend a running training; the only mutable field."""
    queue_name: ObjectName | None = None
    """Kueue LocalQueue; the Job is created suspended for Kueue to admit it."""
    failure_policy: FailurePolicy | None = None
    primary_metric: MetricName | None = None
    """The metric `kubectl get` shows (default: the first registration gate's metric, so
    a classifier shows accuracy and a regressor its loss without extra settings)."""
    # `register` would shadow BaseModel.register (pydantic models are ABCs).
    registration: Registration | None = Field(None, alias="register")
    """Register the model when the training succeeds and every gate holds."""


TrainingJobPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class TrainingJobStatus(StatusBase):
    """The observed state of the training and its MLflow run."""

    phase: TrainingJobPhase | None = None
    job_name: str | None = None
    """The batch/v1 Job running the pods."""
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    mlflow_run_url: str | None = None
    """Link to the run in the MLflow UI."""
    start_time: datetime.datetime | None = None
    completion_time: datetime.datetime | None = None
    attempts: int | None = Field(None, ge=0)
    """Pod (or gang) attempts so far."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Final metrics of the run."""
    primary_metric: str | None = Field(None, max_length=300)
    """`name=value` of the primary metric, for the printer column."""
    failure_reason: str | None = None
    """Why the training failed, such as BackoffLimitExceeded or OOMKilled."""
    failure_message: str | None = Field(None, max_length=4096)
    registered_model_version: str | None = None
    """Name of the ModelVersion created when the registration gates passed."""


class TrainingJob(CustomResource):
    """Runs one training as Kubernetes pods, tracked as one MLflow run."""

    crd_names = CrdNames(plural="trainingjobs", short_names=("tj",))
    printer_columns = (
        PHASE_COLUMN,
        PrinterColumn("Workers", ".spec.workers", "integer", "Pods training together"),
        PrinterColumn("Run", ".status.mlflowRunId", "string", "MLflow run id"),
        PrinterColumn("Metric", ".status.primaryMetric", "string", "spec.primaryMetric=value"),
        PrinterColumn("Reason", ".status.failureReason", "string", "Why it failed", 1),
        AGE_COLUMN,
    )

    kind: Literal["TrainingJob"] = "TrainingJob"
    spec: Annotated[
        TrainingJobSpec,
        # Like a Job's pod template: a run already logged under these settings must not
        # silently change meaning. Suspend stays mutable so Kueue-style pausing works.
        immutable_except(
            TrainingJobSpec,
            "suspend",
            message="spec is immutable: a changed training is a new TrainingJob"
            " (only suspend may change)",
        ),
    ]
    status: TrainingJobStatus | None = None

    @classmethod
    def initial_phase(cls) -> str:
        return "Pending"
