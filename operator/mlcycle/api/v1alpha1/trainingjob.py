"""TrainingJob: one training run as pods, tracked in MLflow, optionally registered."""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints

from mlcycle.api.v1alpha1.common import (
    AGE_COLUMN,
    PHASE_COLUMN,
    ApiModel,
    CrdNames,
    CustomResource,
    LocalObjectReference,
    PrinterColumn,
    StatusBase,
    WorkloadTemplate,
)
from mlcycle.api.v1alpha1.conditions import ConditionType, Reason
from mlcycle.api.v1alpha1.validation import (
    AliasName,
    ArtifactPath,
    CelRule,
    LabelMap,
    ListType,
    MetricName,
    ModelName,
    ObjectName,
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


# --- Conditions and reasons -------------------------------------------------------------------
# Complete, Failed and Suspended mirror the batch/v1 Job's own vocabulary, so
# `kubectl describe` reads the same on the TrainingJob and its Job.

TRACKING_READY: Final = ConditionType(
    "TrackingReady",
    "Whether the MLflow run exists (`RunBound`); no pod starts until it does. False says why"
    " MLflow cannot be used (`MLflowUnavailable`, `MLflowNotConfigured`, `MLflowRejected`).",
)
RUNNING: Final = ConditionType(
    "Running",
    "True while the training pods run (reason `Running`, or `GangRestarting`); False gives the"
    " phase's reason: what the training waits for, or how it ended.",
)
COMPLETE: Final = ConditionType(
    "Complete", "True once the training succeeded (`Completed`), as on the batch/v1 Job."
)
FAILED: Final = ConditionType(
    "Failed",
    "True once the training failed; the reason says why and the message gives the exit code"
    " and the end of the log. The spec is immutable: fix the cause in a new TrainingJob.",
)
SUSPENDED: Final = ConditionType(
    "Suspended",
    "True while the Job is suspended, by `spec.suspend` (reason `Suspended`) or until Kueue"
    " admits it (`Queued`); `Resumed` once it runs again.",
)
ADMITTED: Final = ConditionType(
    "Admitted",
    "With `spec.queueName`: whether Kueue admitted the Job (reason `Admitted`); False while it"
    " waits (`Queued`, `Pending`): check the LocalQueue and its ClusterQueue's quota.",
)
MODEL_REGISTERED: Final = ConditionType(
    "ModelRegistered",
    "With `register`: whether the model was registered as a ModelVersion (reason"
    " `ModelRegistered`, naming it); False when a gate refused it.",
)

PENDING: Final = Reason(
    "Pending", "The Job is not created yet: it is once MLflow and the API server accept them."
)
JOB_CREATED: Final = Reason(
    "JobCreated", "The Job exists and its pods have not started yet; nothing stands in the way."
)
QUEUED: Final = Reason(
    "Queued",
    "The Job waits, suspended, for Kueue to admit it from `spec.queueName`: check that the"
    " LocalQueue exists and its ClusterQueue has quota.",
)
RESUMED: Final = Reason("Resumed", "The Job is no longer suspended.")
COMPLETED: Final = Reason(
    "Completed",
    "The training pods succeeded; the run is closed FINISHED and its final metrics are in"
    " `status.metrics`.",
)
GANG_RESTARTING: Final = Reason(
    "GangRestarting",
    "A rank of a multi-worker training failed: every worker restarts as a new attempt, up to"
    " `backoffLimit`; the message says what failed.",
)
BACKOFF_LIMIT_EXCEEDED: Final = Reason(
    "BackoffLimitExceeded",
    "Every attempt `backoffLimit` allows failed: the message has the last exit code and log;"
    " fix the training code, data or resources.",
)
DEADLINE_EXCEEDED: Final = Reason(
    "DeadlineExceeded",
    "The training ran longer than `activeDeadlineSeconds` and was stopped (run KILLED): raise"
    " the deadline or shorten the training.",
)
POD_FAILURE_POLICY: Final = Reason(
    "PodFailurePolicy",
    "A pod exited with a code of `failurePolicy.permanentExitCodes`: the Job failed without"
    " another attempt.",
)
OOM_KILLED: Final = Reason(
    "OOMKilled",
    "A training container ran out of memory: raise `resources.limits.memory` or make the"
    " training use less.",
)
IMAGE_PULL_BACK_OFF: Final = Reason(
    "ImagePullBackOff",
    "The node keeps failing to pull `spec.image`: check its name, tag and"
    " `podTemplate.imagePullSecrets`; `startupDeadlineSeconds` bounds the wait.",
)
ERR_IMAGE_PULL: Final = Reason(
    "ErrImagePull",
    "The node could not pull `spec.image`: check its name, tag and `podTemplate.imagePullSecrets`.",
)
INVALID_IMAGE_NAME: Final = Reason(
    "InvalidImageName", "`spec.image` is not a valid image reference: fix it."
)
CREATE_CONTAINER_CONFIG_ERROR: Final = Reason(
    "CreateContainerConfigError",
    "The container cannot be configured, usually a Secret or ConfigMap key that an `env`"
    " `valueFrom` names is missing: create it.",
)
CREATE_CONTAINER_ERROR: Final = Reason(
    "CreateContainerError",
    "The node could not create the container (command, volume or security settings): the"
    " message says which.",
)
UNSCHEDULABLE: Final = Reason(
    "Unschedulable",
    "No node can run a training pod (resources, node selector, taints, GPUs): the message is"
    " the scheduler's; change `resources` or `podTemplate`, or add capacity.",
)
STARTUP_DEADLINE_EXCEEDED: Final = Reason(
    "StartupDeadlineExceeded",
    "Training pods stayed Pending longer than `startupDeadlineSeconds` (unschedulable, image"
    " pull): the Job is deleted and the training failed; the message says why.",
)
JOB_REFUSED: Final = Reason(
    "JobRefused",
    "The API server refused the Job (a ResourceQuota, a LimitRange, an admission webhook): the"
    " message is its answer; retried with backoff until it accepts.",
)
ERROR: Final = Reason(
    "Error",
    "The Job failed without a reason of its own: see the message and the pods' logs.",
)
RUN_BOUND: Final = Reason(
    "RunBound", "The MLflow run exists and the pods continue it; the message names it."
)
GATES_NOT_MET: Final = Reason(
    "GatesNotMet",
    "A `register.gates` metric, or the champion gate (`compareTo`), was not met: the model is"
    " not registered; the message says by how much.",
)
CHAMPION_METRIC_MISSING: Final = Reason(
    "ChampionMetricMissing",
    "The `compareTo` champion has no `compareMetric` to compare with (`onMissing: fail`):"
    " the model is not registered; set `register.onMissing: pass` to register anyway.",
)


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
