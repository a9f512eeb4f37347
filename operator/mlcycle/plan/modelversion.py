"""ModelVersion decisions: where the model comes from, which registry version is this
object's, which tags and aliases to write, who owns an alias, how long to back off, and
the status to write.

Pure: registry state arrives as plain records (anything with the attributes of
`RegistryVersion` / `SourceRunView`), the clock and the jitter are arguments.

Phases and conditions
---------------------
`status.phase` is Pending (waiting for the source), Registering (the version exists in
MLflow and is not READY yet), Ready, or Failed (the source failed or does not exist, MLflow
refused the registration). Conditions (`reasons` holds every type and reason):

- `Accepted`: the spec parsed (`SpecValid`); an invalid one gets `InvalidSpec` instead.
- `SourceReady`: the source is resolved (`SourceResolved`) or what is awaited or missing
  (`WaitingForTrainingJob`, `WaitingForRun`, `TrainingJobNotFound`, `RunNotFound`,
  `TrainingJobFailed`, `RunFailed`, `VersionNotFound`).
- `Registered`: the MLflow version is READY (`VersionReady`), or `Registering`,
  `RegistrationFailed`, `MLflowUnavailable`, `MLflowRejected`.
- `Approved` (only with `approval.required`): `Approved` or `AwaitingApproval`.
- `AliasesSynced`: every declared alias points at this version (`AliasesSet`), or
  `AliasConflict` (another ModelVersion owns one) or `AwaitingApproval`.
- `SignatureRead`: the MLmodel's signature is in status (`SignatureFound`), the model has
  none (`NoSignature`), or it could not be read (`SignatureUnavailable`: the artifact store
  refused, or the operator has no writable /tmp); registration never waits for it.
- `Ready`: True once the phase is Ready.

Alias ownership
---------------
An alias of a registered model is moved by exactly one object: the one whose claim, the
registered-model tag `mlcycle.dev/alias-owner.<alias>` = `<namespace>/<name>/<uid>` (a
ModelVersion) or `InferenceService:<namespace>/<name>/<uid>` (its `registry.promoteAlias`),
stands. One tag per alias, so a crash between any two writes never leaves two owners.
`claim_verdict` is the whole rule. A claim is taken when the alias is unclaimed, or its
claimant no longer exists, is being deleted, or no longer wants the alias (a ModelVersion
lost its approval or dropped it from `aliases`; an InferenceService promotes to another
alias). A live claim of a ModelVersion with `aliasPolicy: Newest` (what a TrainingJob's
gated registration declares) gives way to a newer such version, as MLflow moves an alias
to the version last given it, and to a pin (a `Pin` ModelVersion, an InferenceService's
promotion); an older `Newest` version finds itself `AliasSuperseded` and never takes the
alias back. Any other live claim stands: a second ModelVersion declaring the alias gets
`AliasesSynced=False` with `AliasConflict`, a second InferenceService an `AliasConflict`
Event at promotion, and either leaves the alias alone. Taking is one-way between any two
objects, so none flip-flops. The owner corrects any change made to the alias in MLflow
directly (drift) and announces it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, TypeGuard

from mlcycle.api.v1alpha1.inferenceservice import InferenceService
from mlcycle.api.v1alpha1.modelversion import (
    AliasMove,
    ApprovalStatus,
    Lineage,
    ModelSignature,
    ModelVersion,
    ModelVersionPhase,
    ModelVersionStatus,
)
from mlcycle.api.v1alpha1.trainingjob import DatasetRef, TrainingJob
from mlcycle.plan import reasons
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.plan.conditions import (
    ConditionSet,
    EventIntent,
    StatusPlan,
    cap_message,
    find_condition,
    status_changed,
)

ALIAS_CLAIM_PREFIX: Final = "mlcycle.dev/alias-owner."
ALIAS_HISTORY_PREFIX: Final = "mlcycle.dev/alias."
ARCHIVED_TAG: Final = "mlcycle.dev/archived"
NAMESPACE_TAG: Final = "mlcycle.dev/namespace"
NAME_TAG: Final = "mlcycle.dev/name"
DECLARED_TAGS_TAG: Final = "mlcycle.dev/declared-tags"
"""The keys of `spec.tags` last written, so a key dropped from the spec is deleted in MLflow
while tags set by anyone else are left alone."""
APPROVAL_REQUIRED_TAG: Final = "mlcycle.dev/approval-required"
"""On a version registered with `approval.required`, in the create request itself: the
version keeps requiring approval wherever it is served from, whatever becomes of the
object."""
DEFAULT_ARTIFACT_PATH: Final = "model"
HISTORY_LIMIT: Final = 50

# A version PENDING_REGISTRATION is usually READY within a second or two.
REGISTERING_POLL_SECONDS: Final = 2.0

_WAITING_REASONS: Final = frozenset(
    {reasons.WAITING_FOR_TRAINING_JOB, reasons.WAITING_FOR_RUN, reasons.REGISTERING}
)
_RUN_RUNNING: Final = frozenset({"RUNNING", "SCHEDULED"})


class RegistryVersion(Protocol):
    """A model version as the registry reports it."""

    @property
    def version(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def status_message(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def model_id(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def creation_ms(self) -> int: ...
    @property
    def tags(self) -> dict[str, str]: ...


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


# --- Sources ------------------------------------------------------------------------------


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


# --- The version ----------------------------------------------------------------------------


def keep_oldest(
    versions: Sequence[RegistryVersion],
) -> tuple[RegistryVersion | None, list[RegistryVersion]]:
    """The version this object keeps among those tagged with its uid, and the extras.

    More than one exists only after two creators raced; every reconcile picks the same one
    (oldest, then lowest number) so the extras are removed, never the keeper.
    """
    if not versions:
        return None, []
    ordered = sorted(versions, key=lambda found: (found.creation_ms, int(found.version)))
    return ordered[0], ordered[1:]


def desired_version_tags(mv: ModelVersion) -> dict[str, str]:
    """Declared tags plus where the version is declared; the uid tag is the adapter's."""
    return {
        **mv.spec.tags,
        NAMESPACE_TAG: str(mv.metadata.namespace),
        NAME_TAG: str(mv.metadata.name),
        DECLARED_TAGS_TAG: json.dumps(sorted(mv.spec.tags)),
    }


def registration_tags(mv: ModelVersion) -> dict[str, str]:
    """The tags a new version is created with: the desired ones, plus the approval
    requirement, which no later sync removes."""
    tags = desired_version_tags(mv)
    if requires_approval(mv):
        tags[APPROVAL_REQUIRED_TAG] = "true"
    return tags


def dropped_tags(mv: ModelVersion, actual: Mapping[str, str]) -> list[str]:
    """Tags this object declared before and no longer does, still on the version."""
    try:
        before = json.loads(actual.get(DECLARED_TAGS_TAG, "[]"))
    except ValueError:
        return []  # edited by hand into something else: nothing is known to be ours
    if not isinstance(before, list):
        return []
    return sorted(
        key for key in before if isinstance(key, str) and key in actual and key not in mv.spec.tags
    )


def tag_updates(desired: Mapping[str, str], actual: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in desired.items() if actual.get(key) != value}


def model_uri(model_name: str, version: str) -> str:
    return f"models:/{model_name}/{version}"


# --- Approval -----------------------------------------------------------------------------


def requires_approval(mv: ModelVersion) -> bool:
    return mv.spec.approval is not None and mv.spec.approval.required


def is_approved(mv: ModelVersion) -> bool:
    approval = mv.spec.approval
    return approval is None or not approval.required or approval.approved_by is not None


def approval_status(
    mv: ModelVersion, recorded: ApprovalStatus | None, now: datetime.datetime
) -> ApprovalStatus:
    """Who approved and when: the spec's `approvedAt`, else when the operator first saw
    this approver's approval (kept from status, so a resync does not move it)."""
    approval = mv.spec.approval
    if approval is None or not approval.required:
        return ApprovalStatus(approved=True)
    if approval.approved_by is None:
        return ApprovalStatus(approved=False)
    seen = (
        recorded.approved_at
        if recorded is not None and recorded.approved_by == approval.approved_by
        else None
    )
    return ApprovalStatus(
        approved=True,
        approved_by=approval.approved_by,
        approved_at=approval.approved_at or seen or now,
    )


def wanted_aliases(mv: ModelVersion) -> list[str]:
    """The aliases this object should hold now: none until approved."""
    return list(mv.spec.aliases) if is_approved(mv) else []


# --- Alias ownership ------------------------------------------------------------------------


def claim_key(alias: str) -> str:
    return f"{ALIAS_CLAIM_PREFIX}{alias}"


_CLAIMING_KINDS: Final = ("ModelVersion", "InferenceService")


def claim_value(owner: ModelVersion | InferenceService) -> str:
    # A ModelVersion's claim carries no kind: the form claims had before InferenceServices
    # could hold one, still valid in registries written then.
    base = f"{owner.metadata.namespace}/{owner.metadata.name}/{owner.metadata.uid}"
    return base if owner.kind == "ModelVersion" else f"{owner.kind}:{base}"


@dataclass(frozen=True)
class Claimant:
    namespace: str
    name: str
    uid: str
    kind: str = "ModelVersion"


def claimant(value: str) -> Claimant | None:
    kind, _, path = value.rpartition(":")
    parts = path.split("/")
    if (kind or "ModelVersion") not in _CLAIMING_KINDS or len(parts) != 3 or not all(parts):
        return None
    namespace, name, uid = parts
    return Claimant(namespace, name, uid, kind or "ModelVersion")


def foreign_claims(mv: ModelVersion, model_tags: Mapping[str, str]) -> dict[str, Claimant]:
    """Claims by other objects on the aliases `mv` wants."""
    found: dict[str, Claimant] = {}
    for alias in wanted_aliases(mv):
        value = model_tags.get(claim_key(alias))
        owner = claimant(value) if value else None
        if owner is not None and owner.uid != mv.metadata.uid:
            found[alias] = owner
    return found


def claim_is_live(
    alias: str, owner: Claimant, current: ModelVersion | InferenceService | None
) -> bool:
    """Whether the claimant still exists (same uid), is not being deleted, and still wants
    the alias (a ModelVersion declares it and is approved; an InferenceService promotes
    to it); otherwise its claim is stale and may be taken over."""
    if current is None or current.metadata.uid != owner.uid:
        return False
    if current.metadata.deletion_timestamp is not None:
        return False
    if isinstance(current, InferenceService):
        registry = current.spec.registry
        return registry is not None and registry.promote_alias == alias
    return alias in wanted_aliases(current)


ClaimVerdict = Literal["Take", "Conflict", "Superseded"]
"""What an object wanting an alias does about another object's claim on it: take it, leave
it and report a conflict, or leave it because a newer registration follows it."""


def claim_verdict(
    alias: str,
    holder: Claimant,
    holder_now: ModelVersion | InferenceService | None,
    contender: ModelVersion | InferenceService,
    contender_version: str | None = None,
) -> ClaimVerdict:
    """Whether `contender` (at registry version `contender_version` when a ModelVersion)
    may take `alias` from `holder`, whose object the API server has as `holder_now`.

    Taking is one-way: whenever the contender may take the alias, the holder may not take
    it back (a pin never yields to a `Newest` version, a version never to an older one).
    """
    if not claim_is_live(alias, holder, holder_now):
        return "Take"
    if not _follows_newest(holder_now):
        return "Conflict"
    if not _follows_newest(contender):
        return "Take"  # a person's pin or a promotion outranks an automatic registration
    held = _version_number(holder_now.status.version if holder_now.status else None)
    wanted = _version_number(contender_version)
    if held is None or wanted is None:
        # The holder's status write was lost after its claim: undecided until it lands.
        return "Conflict"
    if wanted > held:
        return "Take"
    return "Superseded" if wanted < held else "Conflict"


def _follows_newest(
    owner: ModelVersion | InferenceService | None,
) -> TypeGuard[ModelVersion]:
    return isinstance(owner, ModelVersion) and owner.spec.alias_policy == "Newest"


def _version_number(version: str | None) -> int | None:
    return int(version) if version is not None and version.isdigit() else None


@dataclass(frozen=True)
class AliasPlan:
    """Registry writes that bring the aliases to the declared state, and their record."""

    claims: dict[str, str] = field(default_factory=dict)
    """Registered-model tags to set: claims taken."""
    releases: list[str] = field(default_factory=list)
    """Registered-model tags to delete: claims given up."""
    set_aliases: list[str] = field(default_factory=list)
    remove_aliases: list[str] = field(default_factory=list)
    version_tags: dict[str, str] = field(default_factory=dict)
    """The alias history on the MLflow version itself."""
    held: list[str] = field(default_factory=list)
    """Aliases pointing at this version once applied."""
    conflicts: dict[str, Claimant] = field(default_factory=dict)
    superseded: dict[str, Claimant] = field(default_factory=dict)
    """Wanted aliases that follow a newer registration (`aliasPolicy: Newest`)."""
    moves: list[AliasMove] = field(default_factory=list)
    events: list[EventIntent] = field(default_factory=list)


def _history_tag(move: AliasMove) -> tuple[str, str]:
    previous = f", previous version {move.previous_version}" if move.previous_version else ""
    when = move.time.isoformat().replace("+00:00", "Z")
    return f"{ALIAS_HISTORY_PREFIX}{move.alias}", f"{move.action} at {when}{previous}"


def plan_aliases(
    mv: ModelVersion,
    *,
    version: str,
    model_aliases: Mapping[str, str],
    model_tags: Mapping[str, str],
    verdicts: Mapping[str, ClaimVerdict],
    previously_held: Sequence[str],
    now: datetime.datetime,
) -> AliasPlan:
    """Claims, alias writes and their record for one pass.

    `verdicts` holds `claim_verdict` for each alias another object claims (a claim left
    out stands). An alias this object held before and finds elsewhere (or gone) was changed
    in MLflow directly: it is set back and reported as drift.
    """
    plan = AliasPlan()
    mine = claim_value(mv)
    wanted = wanted_aliases(mv)
    for alias in wanted:
        claim = model_tags.get(claim_key(alias))
        owner = claimant(claim) if claim else None
        if owner is not None and owner.uid != mv.metadata.uid:
            verdict = verdicts.get(alias, "Conflict")
            if verdict == "Superseded":
                plan.superseded[alias] = owner
                continue
            if verdict == "Conflict":
                plan.conflicts[alias] = owner
                continue
        if claim != mine:
            plan.claims[claim_key(alias)] = mine
        current = model_aliases.get(alias)
        plan.held.append(alias)
        if current == version:
            continue
        plan.set_aliases.append(alias)
        drift = alias in previously_held
        reason = (
            f"changed in MLflow to {f'version {current}' if current else 'nothing'}; set back"
            if drift
            else "declared"
        )
        move = AliasMove(
            alias=alias, action="Set", time=now, previous_version=current, reason=reason
        )
        plan.moves.append(move)
        if drift:
            plan.events.append(
                EventIntent(
                    "Warning",
                    reasons.DRIFT_CORRECTED,
                    f"alias {alias} was {reason}: version {version}",
                )
            )
        else:
            before = f" (was version {current})" if current else ""
            plan.events.append(
                EventIntent(
                    "Normal", reasons.ALIAS_MOVED, f"alias {alias} set to version {version}{before}"
                )
            )
    for key, value in model_tags.items():
        alias = key.removeprefix(ALIAS_CLAIM_PREFIX)
        if not key.startswith(ALIAS_CLAIM_PREFIX) or alias in wanted:
            continue
        owner = claimant(value)
        if owner is None or owner.uid != mv.metadata.uid:
            continue
        plan.releases.append(key)
        if model_aliases.get(alias) == version:
            plan.remove_aliases.append(alias)
            why = "approval withdrawn" if alias in mv.spec.aliases else "no longer declared"
            plan.moves.append(
                AliasMove(
                    alias=alias, action="Removed", time=now, previous_version=version, reason=why
                )
            )
            plan.events.append(
                EventIntent(
                    "Normal",
                    reasons.ALIAS_REMOVED,
                    f"alias {alias} removed from version {version} ({why})",
                )
            )
    for move in plan.moves:
        key, value = _history_tag(move)
        plan.version_tags[key] = value
    return plan


def release_all(mv: ModelVersion, model_tags: Mapping[str, str]) -> list[str]:
    """The claim tags `mv` holds, for its finalizer to give up."""
    return [
        key
        for key, value in model_tags.items()
        if key.startswith(ALIAS_CLAIM_PREFIX)
        and (owner := claimant(value)) is not None
        and owner.uid == mv.metadata.uid
    ]


# --- Backoff --------------------------------------------------------------------------------


def backing_off(status: ModelVersionStatus | None, now: datetime.datetime) -> float | None:
    """Seconds left before MLflow may be called again, when backing off."""
    if status is None or status.next_attempt_time is None:
        return None
    left = (status.next_attempt_time - now).total_seconds()
    return left if left > 0 else None


# --- Status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What one reconcile established; `status_plan` turns it into status and Events."""

    phase: ModelVersionPhase
    registered: tuple[bool, str, str] | None = None
    """(status, reason, message) of the Registered condition."""
    source: ResolvedSource | None = None
    source_blocked: SourceBlocked | None = None
    version: str | None = None
    signature: ModelSignature | None = None
    signature_read: tuple[bool, str, str] | None = None
    """(status, reason, message) of the SignatureRead condition, when a read was tried."""
    aliases: AliasPlan | None = None
    events: list[EventIntent] = field(default_factory=list)
    retry_count: int | None = None
    next_attempt_time: datetime.datetime | None = None


def _recorded(status: ModelVersionStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


_CLEARABLE: Final = ("retryCount", "nextAttemptTime")


def _transition_event(
    before: ModelVersionStatus, conditions: ConditionSet, type_: str
) -> EventIntent | None:
    """An Event when a condition appears or its status or reason moves."""
    old = find_condition(before.conditions, type_)
    new = find_condition(conditions.conditions, type_)
    if new is None or (old is not None and (old.status, old.reason) == (new.status, new.reason)):
        return None
    normal = new.status == "True" or new.reason in _WAITING_REASONS
    return EventIntent("Normal" if normal else "Warning", new.reason, cap_message(new.message))


def _alias_condition(mv: ModelVersion, plan: AliasPlan) -> tuple[bool, str, str]:
    if plan.conflicts:
        owners = ", ".join(
            f"{alias} (owned by {owner.kind} {owner.namespace}/{owner.name})"
            for alias, owner in sorted(plan.conflicts.items())
        )
        return False, reasons.ALIAS_CONFLICT, f"aliases claimed by another object: {owners}"
    if mv.spec.aliases and not is_approved(mv):
        return False, reasons.AWAITING_APPROVAL, "aliases are set once the version is approved"
    if plan.superseded:
        newer = ", ".join(
            f"{alias} (followed to newer ModelVersion {owner.namespace}/{owner.name})"
            for alias, owner in sorted(plan.superseded.items())
        )
        held = f"; holds {', '.join(plan.held)}" if plan.held else ""
        return True, reasons.ALIAS_SUPERSEDED, f"aliases moved on: {newer}{held}"
    held = ", ".join(plan.held) or "none declared"
    return True, reasons.ALIASES_SET, f"aliases: {held}"


def signature_settled(status: ModelVersionStatus) -> bool:
    """Read once for good: found, or the model has none. A failed read is tried again."""
    read = find_condition(status.conditions, reasons.SIGNATURE_READ)
    return status.signature is not None or (read is not None and read.status == "True")


def status_plan(mv: ModelVersion, progress: Progress, now: datetime.datetime) -> StatusPlan:
    """The status for what this reconcile established, Events for what changed."""
    before = mv.status or ModelVersionStatus()
    conditions = ConditionSet(before.conditions, mv.metadata.generation, now)
    # Parsed into the typed model, so the spec is one the operator acts on (an invalid one
    # never gets here: the handler records InvalidSpec instead).
    conditions.put(reasons.ACCEPTED, True, reasons.SPEC_VALID, "spec accepted")
    if progress.source_blocked is not None:
        blocked = progress.source_blocked
        conditions.put(reasons.SOURCE_READY, False, blocked.reason, blocked.message)
    elif progress.source is not None:
        conditions.put(
            reasons.SOURCE_READY, True, reasons.SOURCE_RESOLVED, f"source {progress.source.uri}"
        )
    if progress.registered is not None:
        conditions.put(reasons.REGISTERED, *progress.registered)
    approval = approval_status(mv, before.approval, now)
    if mv.spec.approval is not None and mv.spec.approval.required:
        if approval.approved:
            conditions.put(
                reasons.APPROVED, True, reasons.APPROVED, f"approved by {approval.approved_by}"
            )
        else:
            conditions.put(
                reasons.APPROVED,
                False,
                reasons.AWAITING_APPROVAL,
                "set spec.approval.approvedBy to approve this version",
            )
    if progress.aliases is not None:
        conditions.put(reasons.ALIASES_SYNCED, *_alias_condition(mv, progress.aliases))
    if progress.signature_read is not None:
        conditions.put(reasons.SIGNATURE_READ, *progress.signature_read)
    ready = progress.phase == "Ready"
    conditions.put(
        reasons.READY,
        ready,
        reasons.VERSION_READY if ready else progress.phase,
        f"version {progress.version} is READY in MLflow" if ready else f"phase {progress.phase}",
    )
    version = progress.version or before.version
    history = [*before.alias_history]
    if progress.aliases is not None:
        history = [*history, *progress.aliases.moves][-HISTORY_LIMIT:]
    status = before.model_copy(
        update={
            "observed_generation": mv.metadata.generation,
            "phase": progress.phase,
            "conditions": conditions.conditions,
            "version": version,
            "model_uri": model_uri(mv.spec.model_name, version) if version else None,
            "source": progress.source.uri if progress.source else before.source,
            "signature": progress.signature or before.signature,
            "approval": approval,
            "lineage": progress.source.lineage if progress.source else before.lineage,
            "aliases": progress.aliases.held if progress.aliases else before.aliases,
            "alias_history": history,
            "retry_count": progress.retry_count,
            "next_attempt_time": progress.next_attempt_time,
        }
    )
    recorded = _recorded(before)
    desired = _recorded(status)
    for key in _CLEARABLE:
        if key not in desired and key in recorded:
            desired[key] = None
    events = list(progress.events)
    for type_ in (
        reasons.ACCEPTED,
        reasons.SOURCE_READY,
        reasons.REGISTERED,
        reasons.APPROVED,
        reasons.ALIASES_SYNCED,
        reasons.SIGNATURE_READ,
    ):
        event = _transition_event(before, conditions, type_)
        if event is not None:
            events.append(event)
    if progress.aliases is not None:
        events.extend(progress.aliases.events)
    return StatusPlan(desired, events, status_changed(recorded, desired))


def unavailable_progress(
    mv: ModelVersion, reason: str, message: str, now: datetime.datetime, jitter: float
) -> tuple[Progress, float]:
    """MLflow could not be reached (or refused): keep the phase, count the attempt, and
    schedule the next one with backoff; the delay is returned for kopf's retry."""
    before = mv.status or ModelVersionStatus()
    retries = (before.retry_count or 0) + 1
    delay = backoff_seconds(retries, jitter)
    phase: ModelVersionPhase = before.phase or "Pending"
    if reason == reasons.MLFLOW_REJECTED and before.phase != "Ready":
        phase = "Failed"
    progress = Progress(
        phase=phase,
        registered=(False, reason, message),
        version=before.version,
        retry_count=retries,
        next_attempt_time=now + datetime.timedelta(seconds=delay),
    )
    return progress, delay


Registration = Literal["Registering", "Ready", "Failed"]


def registration_state(version: RegistryVersion) -> Registration:
    if version.status == "READY":
        return "Ready"
    if version.status == "FAILED_REGISTRATION":
        return "Failed"
    return "Registering"
