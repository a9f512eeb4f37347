"""ModelVersion: "this artifact is version N of model M", kept in sync with the MLflow
Model Registry."""

from __future__ import annotations

import datetime
from typing import Annotated, Final, Literal

from pydantic import Field

from mlcycle.api.v1alpha1.common import (
    AGE_COLUMN,
    PHASE_COLUMN,
    ApiModel,
    CrdNames,
    CustomResource,
    LocalObjectReference,
    PrinterColumn,
    StatusBase,
)
from mlcycle.api.v1alpha1.conditions import ConditionType, Reason
from mlcycle.api.v1alpha1.trainingjob import DatasetRef
from mlcycle.api.v1alpha1.validation import (
    AliasName,
    ArtifactPath,
    CelRule,
    LabelMap,
    ListType,
    ModelName,
    exactly_one_of,
    immutable,
)

Aliases = Annotated[list[AliasName], Field(max_length=10), ListType.set()]

RunId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]


class RunSource(ApiModel):
    """A model logged in an MLflow run."""

    run_id: RunId
    artifact_path: ArtifactPath = "model"


class ModelVersionSource(ApiModel):
    """Where the model comes from; exactly one field is set."""

    cel_rules = (exactly_one_of("training_job_ref", "run", "uri", "version", what="source"),)

    training_job_ref: LocalObjectReference | None = None
    """A TrainingJob in this namespace: its run and `register.artifactPath`."""
    run: RunSource | None = None
    uri: str | None = Field(None, max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:.+$")
    """An MLflow-loadable artifact location, such as `s3://bucket/model` or `runs:/id/model`."""
    version: int | None = Field(None, ge=1)
    """Adopt this existing version of `modelName`, registered outside mlcycle."""


class Approval(ApiModel):
    """The approval gate: an unapproved version gets no alias and is not deployed."""

    cel_rules = (
        CelRule(
            rule="!has(self.approvedAt) || has(self.approvedBy)",
            message="approvedAt needs approvedBy",
            holds=lambda approval: approval.approved_at is None or approval.approved_by is not None,
        ),
    )

    required: bool = False
    approved_by: str | None = Field(None, min_length=1, max_length=256)
    """Who approved; set by a reviewer through Git and guarded by RBAC."""
    approved_at: datetime.datetime | None = None


class RegisteredModelSettings(ApiModel):
    """Applied to the registered model when mlcycle creates it."""

    description: str | None = Field(None, max_length=5000)
    tags: LabelMap = Field(default_factory=dict)


class ModelVersionSpec(ApiModel):
    """The declared registry state of one model version."""

    model_name: Annotated[ModelName, immutable("modelName")]
    """Registered model name; created if missing."""
    source: Annotated[
        ModelVersionSource,
        immutable("source", because="a different artifact is a new ModelVersion"),
    ]
    description: str | None = Field(None, max_length=5000)
    tags: LabelMap = Field(default_factory=dict)
    """Tags synced to the MLflow model version."""
    aliases: Aliases = Field(default_factory=list)
    """Aliases this version should hold, such as `challenger`."""
    alias_policy: Literal["Pin", "Newest"] = "Pin"
    """Who may take this version's aliases. `Pin`: it keeps them while it declares them,
    and another ModelVersion declaring one gets `AliasConflict`. `Newest`: an alias follows
    the newest version of the model whose ModelVersion declares it with `Newest` (a
    TrainingJob's registrations do), and gives way to a `Pin`."""
    approval: Approval | None = None
    deletion_policy: Literal["Retain", "Archive", "Delete"] = "Retain"
    """What deleting this object does in MLflow: keep the version, tag it archived and drop
    its aliases, or delete it."""
    registered_model: RegisteredModelSettings | None = None


ModelVersionPhase = Literal["Pending", "Registering", "Ready", "Failed"]


class ModelSignature(ApiModel):
    """The model's input and output schema as MLflow records it (JSON strings)."""

    inputs: str | None = Field(None, max_length=65536)
    outputs: str | None = Field(None, max_length=65536)


class ApprovalStatus(ApiModel):
    approved: bool = False
    approved_by: str | None = None
    approved_at: datetime.datetime | None = None


class Lineage(ApiModel):
    """From the data to the model."""

    training_job: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    logged_model_id: str | None = None
    """The MLflow 3 LoggedModel the version was registered from, when there is one."""
    dataset: DatasetRef | None = None


class AliasMove(ApiModel):
    """One alias change, so "which version was production when" can be answered."""

    alias: str
    action: Literal["Set", "Removed"]
    time: datetime.datetime
    previous_version: str | None = None
    """The version that held the alias before."""
    reason: str | None = Field(None, max_length=1024)


class ModelVersionStatus(StatusBase):
    phase: ModelVersionPhase | None = None
    version: str | None = None
    """The MLflow model version number."""
    model_uri: str | None = None
    """`models:/<name>/<version>`."""
    source: str | None = None
    """The resolved artifact location."""
    signature: ModelSignature | None = None
    approval: ApprovalStatus | None = None
    lineage: Lineage | None = None
    aliases: Annotated[list[str], Field(max_length=10)] = Field(default_factory=list)
    """Aliases this version holds in MLflow now."""
    alias_history: Annotated[list[AliasMove], Field(max_length=50)] = Field(default_factory=list)
    """The latest alias moves, oldest dropped first."""
    retry_count: int | None = Field(None, ge=0)
    """Consecutive attempts that found MLflow unavailable; the backoff grows with it."""
    next_attempt_time: datetime.datetime | None = None
    """No MLflow call before this time while backing off, whatever triggers a reconcile."""


# --- Conditions and reasons -------------------------------------------------------------------

SOURCE_READY: Final = ConditionType(
    "SourceReady",
    "Whether the source exists and is finished (TrainingJob `Succeeded`, run `FINISHED`);"
    " False says what the registration waits for, or why the source cannot be used.",
)
REGISTERED: Final = ConditionType(
    "Registered",
    "Whether the version exists in MLflow and is READY (`VersionReady`); False while"
    " `Registering`, or when MLflow failed it (`RegistrationFailed`).",
)
APPROVED: Final = ConditionType(
    "Approved",
    "With `approval.required`: whether an approver set `approvedBy` (reason `Approved`); until"
    " then `AwaitingApproval`: no alias is set and no InferenceService serves the version.",
)
ALIASES_SYNCED: Final = ConditionType(
    "AliasesSynced",
    "Whether the aliases in `spec.aliases` point at this version in MLflow (`AliasesSet`,"
    " `AliasSuperseded`); False with `AliasConflict` or `AwaitingApproval`.",
)
SIGNATURE_READ: Final = ConditionType(
    "SignatureRead",
    "Whether the version's MLmodel signature could be read (it fills `status.signature`).",
)

SOURCE_RESOLVED: Final = Reason(
    "SourceResolved", "The source is found and finished; the message gives its location."
)
WAITING_FOR_TRAINING_JOB: Final = Reason(
    "WaitingForTrainingJob",
    "The source TrainingJob has not succeeded yet: the registration starts when it does.",
)
TRAINING_JOB_NOT_FOUND: Final = Reason(
    "TrainingJobNotFound",
    "`source.trainingJobRef` names no TrainingJob in this namespace: the object waits for it"
    " (it may be applied later); check the name.",
)
TRAINING_JOB_FAILED: Final = Reason(
    "TrainingJobFailed",
    "The source TrainingJob failed, so there is nothing to register: see its `Failed` condition.",
)
WAITING_FOR_RUN: Final = Reason(
    "WaitingForRun",
    "The source MLflow run is still RUNNING or SCHEDULED: the registration starts when it"
    " finishes.",
)
RUN_NOT_FOUND: Final = Reason(
    "RunNotFound", "`source.run.runId` is no run in MLflow: check the run id."
)
RUN_FAILED: Final = Reason(
    "RunFailed", "The source MLflow run ended FAILED or KILLED: there is nothing to register."
)
REGISTERING: Final = Reason(
    "Registering",
    "MLflow has not finished creating the version (PENDING_REGISTRATION): wait.",
)
VERSION_READY: Final = Reason("VersionReady", "The version is READY in MLflow; nothing to do.")
REGISTRATION_FAILED: Final = Reason(
    "RegistrationFailed",
    "MLflow failed the registration (FAILED_REGISTRATION): the message has MLflow's status"
    " message; check the source's artifacts.",
)
AWAITING_APPROVAL: Final = Reason(
    "AwaitingApproval",
    "Approval is required and not given: a member of the approvers group sets"
    " `spec.approval.approvedBy` (see *Approval gate*).",
)
ALIASES_SET: Final = Reason(
    "AliasesSet", "Every alias this object holds points at its version; nothing to do."
)
ALIAS_SUPERSEDED: Final = Reason(
    "AliasSuperseded",
    "A newer registration (`aliasPolicy: Newest`) holds an alias this version declares; the"
    " message names it. Nothing to do.",
)
SIGNATURE_FOUND: Final = Reason(
    "SignatureFound", "The MLmodel declares a signature; `status.signature` holds it."
)
NO_SIGNATURE: Final = Reason(
    "NoSignature", "The MLmodel declares none (MLflow then serves without input checks)."
)
SIGNATURE_UNAVAILABLE: Final = Reason(
    "SignatureUnavailable",
    "The MLmodel could not be read (the artifact store refused, or the operator has no"
    " writable /tmp): the registration goes on; read again at the drift-check interval.",
)
ALIAS_MOVED: Final = Reason(
    "AliasMoved", "An alias was set to this version; the message names the version it left."
)
ALIAS_REMOVED: Final = Reason(
    "AliasRemoved",
    "An alias was removed from this version: no longer declared, or the approval was withdrawn.",
)
DRIFT_CORRECTED: Final = Reason(
    "DriftCorrected",
    "The version's aliases or tags were changed in MLflow and set back to the spec: change"
    " the ModelVersion instead.",
)
DUPLICATE_VERSION_REMOVED: Final = Reason(
    "DuplicateVersionRemoved",
    "A second MLflow version was found for this object (two replicas during a leader"
    " hand-over): the oldest is kept, this one was deleted. Nothing to do.",
)
VERSION_CREATED: Final = Reason("VersionCreated", "The version was registered in MLflow.")
VERSION_ADOPTED: Final = Reason(
    "VersionAdopted",
    "The existing MLflow version `source.version` was adopted: tagged with this object's"
    " uid, never registered again.",
)


class ModelVersion(CustomResource):
    """One version of a registered model in the MLflow Model Registry."""

    crd_names = CrdNames(plural="modelversions", short_names=("mv",))
    printer_columns = (
        PrinterColumn("Model", ".spec.modelName", "string", "Registered model"),
        PrinterColumn("Version", ".status.version", "string", "MLflow version"),
        PrinterColumn("Aliases", ".status.aliases", "string", "Aliases held in MLflow"),
        PHASE_COLUMN,
        AGE_COLUMN,
    )

    kind: Literal["ModelVersion"] = "ModelVersion"
    spec: ModelVersionSpec
    status: ModelVersionStatus | None = None

    @classmethod
    def initial_phase(cls) -> str:
        return "Pending"
