"""InferenceService: serve a registered model and roll new versions out safely."""

from __future__ import annotations

import datetime
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
    CelRule,
    Duration,
    ListType,
    ModelName,
    ObjectName,
)

Percent = Annotated[int, Field(ge=0, le=100)]
Ratio = Annotated[float, Field(ge=0, le=1)]


class ModelSelector(ApiModel):
    """Which model to serve: a ModelVersion object, a registry version, or an alias."""

    cel_rules = (
        CelRule(
            rule="has(self.modelVersionRef)"
            " ? !(has(self.name) || has(self.version) || has(self.alias))"
            " : (has(self.name) && (has(self.version) != has(self.alias)))",
            message="model is one of: modelVersionRef, {name, version} or {name, alias}",
            holds=lambda model: (
                model.name is None and model.version is None and model.alias is None
                if model.model_version_ref is not None
                else model.name is not None and (model.version is None) != (model.alias is None)
            ),
        ),
    )

    model_version_ref: LocalObjectReference | None = None
    """A ModelVersion in this namespace."""
    name: ModelName | None = None
    """A registered model in MLflow, with `version` or `alias`."""
    version: int | None = Field(None, ge=1)
    alias: AliasName | None = None
    """An alias such as `champion`, without the `@`: the service follows where it points."""


class Batching(ApiModel):
    """Server-side request batching."""

    max_batch_size: int = Field(32, ge=1, le=4096)
    max_latency_ms: int = Field(5, ge=0, le=10000)
    """How long a request may wait for its batch to fill."""
    row_independent: bool | None = None
    """Whether each prediction depends on its own input row alone, so that concurrent
    requests may share one predict call. Unset: true for scikit-learn, xgboost, lightgbm and
    onnx models; any other model (a custom pyfunc may compute across its whole input) is
    called with one request's rows at a time. Set true only for a model that is."""


class ServerSpec(WorkloadTemplate):
    """The model server pods, for the stable and the candidate version alike."""

    cel_rules = (
        CelRule(
            rule="!has(self.minReplicas) || has(self.maxReplicas)",
            message="minReplicas needs maxReplicas: together they turn on autoscaling",
            holds=lambda server: server.min_replicas is None or server.max_replicas is not None,
        ),
        CelRule(
            rule="!has(self.minReplicas) || !has(self.maxReplicas)"
            " || self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            holds=lambda server: (
                server.min_replicas is None
                or server.max_replicas is None
                or server.min_replicas <= server.max_replicas
            ),
        ),
    )

    image: str | None = Field(None, min_length=1, max_length=1024)
    """Model server image; mlcycle's own server when unset."""
    replicas: int = Field(1, ge=0, le=1000)
    min_replicas: int | None = Field(None, ge=1, le=1000)
    max_replicas: int | None = Field(None, ge=1, le=1000)
    """With minReplicas, a HorizontalPodAutoscaler manages the replica count."""
    batching: Batching | None = None


class ParentRef(ApiModel):
    """The Gateway API Gateway (and listener) the HTTPRoute attaches to."""

    name: ObjectName
    namespace: ObjectName | None = None
    section_name: str | None = Field(None, max_length=253)


class GatewaySettings(ApiModel):
    parent_ref: ParentRef
    hostnames: Annotated[
        list[Annotated[str, StringConstraints(max_length=253)]], Field(max_length=16)
    ] = Field(default_factory=list)


class RouterSpec(WorkloadTemplate):
    """The router pods of `traffic.mode: router`."""

    image: str | None = Field(None, min_length=1, max_length=1024)
    """Router image; mlcycle's own when unset."""
    replicas: int = Field(1, ge=1, le=100)


class Traffic(ApiModel):
    """How requests are split between stable and candidate."""

    cel_rules = (
        CelRule(
            rule="has(self.gateway) == (self.mode == 'gateway-api')",
            message="gateway is set exactly when mode is gateway-api",
            holds=lambda traffic: (traffic.gateway is not None) == (traffic.mode == "gateway-api"),
        ),
    )

    mode: Literal["router", "gateway-api", "replicas"] = "router"
    """router: mlcycle's router, exact weights, shadow and A/B without a mesh; gateway-api:
    an HTTPRoute on `gateway.parentRef`; replicas: replica-ratio split on one Service."""
    gateway: GatewaySettings | None = None
    router: RouterSpec = Field(default_factory=RouterSpec)
    """The router's pods (mode router)."""


class AbTest(ApiModel):
    """Requests carrying the header go to the candidate; the rest split by `weight`."""

    header_name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9-]+$")
    header_value: str | None = Field(None, max_length=1024)
    """Exact value to match; any value when unset."""
    weight: Percent = 0
    """Share of the other requests sent to the candidate."""


def _increasing(steps: list[int]) -> bool:
    return steps == sorted(steps)


Steps = Annotated[
    list[Percent],
    Field(min_length=1, max_length=20),
    ListType.set(),
    CelRule(
        rule="self.isSorted()",
        message="steps are canary weights in increasing order",
        holds=_increasing,
    ),
]


class Rollout(ApiModel):
    """How a new version replaces the stable one."""

    cel_rules = (
        CelRule(
            rule="self.strategy != 'ABTest' || has(self.abTest)",
            message="strategy ABTest needs abTest",
            holds=lambda rollout: rollout.strategy != "ABTest" or rollout.ab_test is not None,
        ),
    )

    strategy: Literal["Canary", "Shadow", "ABTest", "Immediate"] = "Canary"
    """Canary: shift weight step by step; Shadow: mirror requests only, then promote;
    ABTest: header rule and fixed split; Immediate: switch at once."""
    steps: Steps = [10, 25, 50]
    """Canary weights in percent; each holds for one `interval` of passing analysis."""
    interval: Duration = "1m"
    capacity: Literal["neutral", "surge"] = "surge"
    """neutral: the stable shrinks as the canary grows (fixed GPU budget); surge: the
    stable keeps its replicas until promotion."""
    ab_test: AbTest | None = None


class PrometheusCheck(ApiModel):
    """A PromQL query whose value must stay within [min, max] for the candidate."""

    cel_rules = (
        CelRule(
            rule="has(self.min) || has(self.max)",
            message="a Prometheus check needs min, max or both",
            holds=lambda check: check.minimum is not None or check.maximum is not None,
        ),
        CelRule(
            rule="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must not exceed max",
            holds=lambda check: (
                check.minimum is None or check.maximum is None or check.minimum <= check.maximum
            ),
        ),
    )

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    query: str = Field(min_length=1, max_length=4096)
    minimum: float | None = Field(None, alias="min")
    maximum: float | None = Field(None, alias="max")


class Analysis(ApiModel):
    """Checks run every interval on the candidate; unset thresholds are not checked."""

    min_requests: int = Field(100, ge=0)
    """Fewer requests in an interval hold the step rather than fail it."""
    success_rate_min: Ratio | None = None
    latency_p99_max_ms: int | None = Field(None, ge=1)
    shadow_agreement_min: Ratio | None = None
    """Share of mirrored requests where candidate and stable predictions agree."""
    drift_max: float | None = Field(None, ge=0)
    """Largest allowed distance between candidate and stable prediction distributions."""
    failure_threshold: int = Field(2, ge=1, le=100)
    """Failed checks before rolling back."""
    prometheus: Annotated[list[PrometheusCheck], Field(max_length=16), ListType.map("name")] = (
        Field(default_factory=list)
    )


class RegistryWriteBack(ApiModel):
    """What a rollout writes back to the MLflow Model Registry."""

    promote_alias: AliasName | None = None
    """Alias moved to a version once it is promoted, such as `champion`."""
    tag_outcome: bool = True
    """Tag model versions with the rollout outcome (`rollout=promoted|failed`)."""


_MODE = "(has({0}.traffic) && has({0}.traffic.mode) ? {0}.traffic.mode : 'router')"


class InferenceServiceSpec(ApiModel):
    """The model to serve and how new versions of it roll out."""

    cel_rules = (
        CelRule(
            rule=f"{_MODE.format('self')} != 'replicas' || !has(self.rollout)"
            " || !has(self.rollout.strategy) || self.rollout.strategy in ['Canary', 'Immediate']",
            message="traffic.mode replicas splits requests by pod counts only: rollout.strategy"
            " must be Canary or Immediate (Shadow and ABTest need mode router or gateway-api)",
            holds=lambda spec: (
                spec.traffic.mode != "replicas" or spec.rollout.strategy in ("Canary", "Immediate")
            ),
        ),
        CelRule(
            rule=f"{_MODE.format('self')} == 'router' || !has(self.analysis)"
            " || !has(self.analysis.shadowAgreementMin)",
            message="analysis.shadowAgreementMin needs traffic.mode router: only mlcycle's"
            " router compares the answers of both versions",
            holds=lambda spec: (
                spec.traffic.mode == "router" or spec.analysis.shadow_agreement_min is None
            ),
        ),
        CelRule(
            rule=f"{_MODE.format('self')} == {_MODE.format('oldSelf')}",
            message="traffic.mode cannot change: create another InferenceService for another"
            " traffic mode and move clients over",
        ),
    )

    model: ModelSelector
    server: ServerSpec = Field(default_factory=ServerSpec)
    traffic: Traffic = Field(default_factory=Traffic)
    rollout: Rollout = Field(default_factory=Rollout)
    analysis: Analysis = Field(default_factory=Analysis)
    paused: bool = False
    """Hold the rollout at its current step."""
    registry: RegistryWriteBack | None = None


InferenceServicePhase = Literal[
    "Ready", "Progressing", "Paused", "Promoting", "RolledBack", "Failed"
]


class AnalysisResult(ApiModel):
    """One interval's analysis of the candidate."""

    time: datetime.datetime
    outcome: Literal["Passed", "Failed", "Held"]
    requests: int | None = None
    success_rate: float | None = None
    """Share of the candidate's requests that succeeded: 5xx fail, and so do 4xx beyond
    the stable's 4xx rate (requests the stable would have answered)."""
    client_error_rate: float | None = None
    """Share of the candidate's requests answered with a 4xx."""
    stable_client_error_rate: float | None = None
    """The stable's 4xx share over the same interval (None when it had no requests)."""
    latency_p99_ms: float | None = None
    shadow_agreement: float | None = None
    drift: float | None = None
    queries: dict[str, float] = Field(default_factory=dict)
    message: str | None = Field(None, max_length=1024)
    """Which check failed, with its value and threshold."""


class CounterSample(ApiModel):
    """The cumulative counters an analysis compares (the candidate's in the routers, and
    the predicted classes of both versions in the model servers) when its interval began.

    Kept in status so a restarted operator computes the same interval's deltas."""

    requests: float = 0
    errors: float = 0
    """Requests answered with a 5xx."""
    client_errors: float = 0
    """Requests answered with a 4xx."""
    stable_requests: float = 0
    """The stable's requests, to compare the candidate's 4xx rate with the stable's."""
    stable_client_errors: float = 0
    latency_buckets: dict[str, float] = Field(default_factory=dict)
    """Cumulative histogram counts by upper bound (`le`), in seconds."""
    shadow_requests: float = 0
    shadow_failures: float = 0
    """Mirrored requests that got no answer or a non-2xx one."""
    shadow_comparisons: float = 0
    shadow_agreements: float = 0
    candidate_predictions: dict[str, float] = Field(default_factory=dict)
    """Predictions of the candidate by `<output>=<class>` (classifiers; with `driftMax`)."""
    stable_predictions: dict[str, float] = Field(default_factory=dict)


class RejectedVersion(ApiModel):
    """A version rolled back or aborted: not tried again for this generation of the spec."""

    version: str
    generation: int | None = None
    reason: str | None = Field(None, max_length=1024)


class TrackStatus(ApiModel):
    """One served version (stable or canary) and, for the canary, its rollout clock."""

    version: str | None = None
    model_uri: str | None = None
    model_version: str | None = None
    """The ModelVersion object, when the model came from one."""
    replicas: int | None = None
    ready_replicas: int | None = None
    weight: Percent | None = None
    """Share of live traffic, in percent."""
    step: int | None = Field(None, ge=0)
    """Index into `spec.rollout.steps`."""
    step_started_at: datetime.datetime | None = None
    """Kept in status so a restarted operator resumes the same step with the same timer."""
    failed_checks: int | None = Field(None, ge=0)
    last_analysis: AnalysisResult | None = None
    started_at: datetime.datetime | None = None
    """When this version's rollout began."""
    baseline: CounterSample | None = None
    promoting: bool | None = None
    """Promotion decided; waiting for the candidate to reach the stable's size."""


class RolloutRecord(ApiModel):
    version: str
    outcome: Literal["Promoted", "RolledBack", "Aborted"]
    reason: str | None = Field(None, max_length=1024)
    start_time: datetime.datetime | None = None
    end_time: datetime.datetime | None = None


class PendingRegistryWrite(ApiModel):
    """A rollout outcome already carried out on traffic whose write-back to the MLflow
    registry (tags, alias) has not landed yet; retried with backoff until MLflow answers."""

    model_name: str
    version: str
    tags: dict[str, str] = Field(default_factory=dict)
    """Version tags to set, such as `rollout=failed`."""
    alias: str | None = None
    """Alias to move to the version (`registry.promoteAlias`)."""
    decided_at: datetime.datetime
    """When the rollout decided the outcome (and moved traffic)."""
    attempts: int = Field(0, ge=0)
    """Failed attempts so far."""
    next_attempt_at: datetime.datetime | None = None
    """No attempt before this time (exponential backoff, jittered)."""
    last_error: str | None = Field(None, max_length=1024)


class InferenceServiceStatus(StatusBase):
    phase: InferenceServicePhase | None = None
    url: str | None = None
    model_name: str | None = None
    """The registered model being served."""
    stable: TrackStatus | None = None
    canary: TrackStatus | None = None
    history: Annotated[list[RolloutRecord], Field(max_length=20)] = Field(default_factory=list)
    """The latest rollouts, oldest dropped first."""
    rejected: RejectedVersion | None = None
    """The version last rolled back; `mlcycle.dev/retry` or a spec change clears it."""
    pending_registry_writes: Annotated[list[PendingRegistryWrite], Field(max_length=20)] = Field(
        default_factory=list
    )
    """Registry write-backs decided but not yet landed in MLflow, oldest first: traffic
    never waits for them; they are written in order once MLflow answers."""
    handled_annotations: dict[str, str] = Field(default_factory=dict)
    """The value of each action annotation (`mlcycle.dev/promote`, `abort`, `retry`)
    already acted on: the annotation stays (GitOps owns it) and acts again only when its
    value changes."""


# --- Conditions and reasons -------------------------------------------------------------------

MODEL_RESOLVED: Final = ConditionType(
    "ModelResolved",
    "Whether `spec.model` resolves to a registry version the operator may serve (`Resolved`);"
    " False names why not, and the running versions keep serving.",
)
TRAFFIC_AVAILABLE: Final = ConditionType(
    "TrafficAvailable",
    "Whether requests to `status.url` are answered: the entry (router, route or Service) and"
    " the stable version are ready, even mid-rollout (`Serving`, `NotServing`).",
)
PROGRESSING: Final = ConditionType(
    "Progressing",
    "True while a candidate version rolls out, the reason saying where it stands"
    " (`StepInProgress`, `WaitingForCandidate`, `Promoting`, `Paused`...); `RolloutComplete`"
    " when no rollout is in progress.",
)
ROLLED_BACK_CONDITION: Final = ConditionType(
    "RolledBack",
    "True while the version the spec asks for is rejected by a rollback (the message says"
    " why): change the spec or set `mlcycle.dev/retry` to try it again; else `NoRollback`.",
)

RESOLVED: Final = Reason(
    "Resolved", "`spec.model` resolved to a registry version, named in the message."
)
MODEL_VERSION_NOT_FOUND: Final = Reason(
    "ModelVersionNotFound",
    "`model.modelVersionRef` names no ModelVersion in this namespace: create it or fix the name.",
)
MODEL_VERSION_NOT_READY: Final = Reason(
    "ModelVersionNotReady",
    "The ModelVersion is not Ready yet (or Failed): served once it is; see its conditions.",
)
ALIAS_NOT_FOUND: Final = Reason(
    "AliasNotFound",
    "The registered model has no such alias: set it in MLflow or with a ModelVersion; the"
    " version is served as soon as the alias exists.",
)
NOT_APPROVED: Final = Reason(
    "NotApproved",
    "The version requires approval (its ModelVersion says so, or mlcycle registered it with"
    " approval required) and no approver has approved it: it is not deployed.",
)
SERVING: Final = Reason(
    "Serving", "The stable version answers requests (for `Ready`: all traffic); nothing to do."
)
NOT_SERVING: Final = Reason(
    "NotServing",
    "No ready pod of the stable version, or the router or route is not ready: the message"
    " counts them; see the pods' events and logs.",
)
DEPLOYING: Final = Reason("Deploying", "The first version is being deployed.")
WAITING_FOR_READINESS: Final = Reason(
    "WaitingForReadiness",
    "The stable version's pods are not ready yet: see their readiness probe"
    " (`/v2/health/ready`), events and logs.",
)
WAITING_FOR_CANDIDATE: Final = Reason(
    "WaitingForCandidate",
    "The candidate's pods are not ready yet: the step starts when one is; see their events"
    " and logs if it lasts.",
)
ROLLOUT_STARTED: Final = Reason(
    "RolloutStarted", "A new version became the candidate; its first step follows."
)
STEP_STARTED: Final = Reason(
    "StepStarted", "A rollout step began; the message gives its weight or mirror share."
)
STEP_IN_PROGRESS: Final = Reason(
    "StepInProgress",
    "A step's interval is running: the message gives the step, the candidate's share and"
    " its failed checks so far.",
)
ANALYSIS_PASSED: Final = Reason(
    "AnalysisPassed", "The interval's analysis passed every check: the next step follows."
)
ANALYSIS_HELD: Final = Reason(
    "AnalysisHeld",
    "Too few requests in the interval (`minRequests`), or the metrics could not be read: the"
    " step is held and nothing counts against the candidate.",
)
ANALYSIS_FAILED: Final = Reason(
    "AnalysisFailed",
    "A check failed (the message gives the values): at `failureThreshold` failed checks the"
    " candidate is rolled back.",
)
AWAITING_PROMOTION: Final = Reason(
    "AwaitingPromotion",
    "An A/B test is running: promote the candidate with the annotation `mlcycle.dev/promote`.",
)
PROMOTION_REQUESTED: Final = Reason(
    "PromotionRequested", "`mlcycle.dev/promote` was set: the candidate is promoted now."
)
PROMOTING: Final = Reason(
    "Promoting", "The candidate is scaled to full size before it takes all traffic."
)
PROMOTED: Final = Reason(
    "Promoted",
    "The candidate became the stable version, with `registry.promoteAlias` when set.",
)
ROLLED_BACK: Final = Reason(
    "RolledBack",
    "The candidate failed its analysis (or was aborted): all traffic went back to the stable"
    " version; change the spec or set `mlcycle.dev/retry` to try it again.",
)
ABORTED: Final = Reason(
    "Aborted",
    "`mlcycle.dev/abort` rolled the candidate back; it is rejected like a failed one.",
)
SUPERSEDED: Final = Reason(
    "Superseded",
    "The spec no longer asks for the candidate in flight (a newer version, or the stable"
    " one): its rollout ended without a verdict.",
)
RETRY_REQUESTED: Final = Reason(
    "RetryRequested", "`mlcycle.dev/retry` was set: the rejected version may roll out again."
)
PAUSED: Final = Reason(
    "Paused", "`spec.paused` holds the rollout at its step: set it to false to go on."
)
ROLLOUT_COMPLETE: Final = Reason(
    "RolloutComplete", "No rollout in progress: the stable version is the one asked for."
)
NO_ROLLBACK: Final = Reason("NoRollback", "No version is rejected.")
TRAFFIC_KIND_NOT_SERVED: Final = Reason(
    "TrafficKindNotServed",
    "`traffic.mode: gateway-api` on a cluster without the Gateway API CRDs: install them; the"
    " route is applied once they serve.",
)
CHILD_REFUSED: Final = Reason(
    "ChildRefused",
    "The API server refused a child (a quota, an admission webhook, a policy): the message"
    " is its answer; retried with backoff, or at once when the child changes.",
)
REGISTRY_WRITE_PENDING: Final = Reason(
    "RegistryWritePending",
    "A rollout outcome (tags, alias) could not be written to MLflow: traffic moved anyway,"
    " the write is kept in status and retried with backoff.",
)
REGISTRY_WRITTEN: Final = Reason("RegistryWritten", "A pending registry write landed in MLflow.")


class InferenceService(CustomResource):
    """Serves a registered model and rolls new versions out with analysis and rollback."""

    crd_names = CrdNames(plural="inferenceservices", short_names=("mlisvc",))
    printer_columns = (
        PrinterColumn("Model", ".status.modelName", "string", "Registered model"),
        PrinterColumn("Stable", ".status.stable.version", "string", "Stable version"),
        PrinterColumn("Canary", ".status.canary.version", "string", "Candidate version"),
        PrinterColumn("Weight", ".status.canary.weight", "integer", "Candidate traffic %"),
        PHASE_COLUMN,
        PrinterColumn("URL", ".status.url", "string", "Service URL", 1),
        AGE_COLUMN,
    )

    kind: Literal["InferenceService"] = "InferenceService"
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None

    @classmethod
    def initial_phase(cls) -> str:
        return "Progressing"
