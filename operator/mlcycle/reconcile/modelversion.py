"""ModelVersion: find this object's version in the MLflow registry (by its uid tag) or
register it, wait for READY, sync tags and aliases, write status; apply the deletion policy.

Level-triggered: create/update/resume and a resync timer all call `reconcile_modelversion`,
which converges to the same registry state however often it runs. The registry is searched
by the object's uid before anything is created, so a crash, a timeout whose request went
through, or a lost status write never yields a second version.
"""

from __future__ import annotations

import asyncio
import datetime
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.errors import AdapterError, NotFoundError, UnavailableError
from mlcycle.adapters.metrics import RegistrationMetrics
from mlcycle.adapters.registry import MlflowRegistry, VersionRecord
from mlcycle.adapters.tracking import SERVICE
from mlcycle.api.v1alpha1 import API_VERSION, ModelVersion, TrainingJob
from mlcycle.api.v1alpha1.modelversion import ModelSignature, ModelVersionStatus
from mlcycle.plan import modelversion as plan
from mlcycle.plan import reasons
from mlcycle.plan.backoff import backoff_seconds
from mlcycle.plan.conditions import EventIntent, StatusPlan
from mlcycle.reconcile.memory import Checked, Memory, ModelLocks, ObjectMemory
from mlcycle.reconcile.objects import claimant_object, read_object
from mlcycle.reconcile.outcome import Outcome
from mlcycle.reconcile.status import write_status


@dataclass
class ModelVersionDeps:
    cluster: ClusterClient
    registry_for: Callable[[str], MlflowRegistry]
    default_tracking_uri: str | None
    metrics: RegistrationMetrics
    jitter: Callable[[], float] = random.random
    drift_check_seconds: float = 60.0
    """How often a Ready, unchanged object is compared with MLflow (drift)."""
    memory: Memory[None] = field(default_factory=Memory)
    model_lock: ModelLocks = field(default_factory=ModelLocks)


async def reconcile_modelversion(
    mv: ModelVersion, deps: ModelVersionDeps, now: datetime.datetime, resync: bool = False
) -> Outcome:
    memory = deps.memory.of(str(mv.metadata.uid))
    if resync and _settled(mv) and not _drift_check_due(memory, deps, now):
        # MLflow has no watch, so Ready objects are compared with it on a timer; at the
        # drift interval, not the resync tick, or many objects would load MLflow for nothing.
        return Outcome([])
    async with memory.lock:
        # The body a trigger was fired with may predate the previous holder's status write.
        current = await _current(mv, deps)
        if current is None:
            return Outcome([])
        memory.checked = Checked(now, current.metadata.generation, None)
        return await _reconcile(current, deps, memory, now)


def _drift_check_due(
    memory: ObjectMemory[None], deps: ModelVersionDeps, now: datetime.datetime
) -> bool:
    last = memory.checked
    return last is None or now - last.at >= datetime.timedelta(seconds=deps.drift_check_seconds)


def _settled(mv: ModelVersion) -> bool:
    status = mv.status
    return (
        status is not None
        and status.phase == "Ready"
        and status.observed_generation == mv.metadata.generation
    )


async def _current(mv: ModelVersion, deps: ModelVersionDeps) -> ModelVersion | None:
    body = await asyncio.to_thread(
        deps.cluster.get,
        API_VERSION,
        "ModelVersion",
        str(mv.metadata.namespace),
        str(mv.metadata.name),
    )
    if body is None:
        return None
    metadata = body.get("metadata") or {}
    if metadata.get("uid") != mv.metadata.uid or metadata.get("deletionTimestamp"):
        return None
    return ModelVersion.from_body(body)


async def _reconcile(
    mv: ModelVersion, deps: ModelVersionDeps, memory: ObjectMemory[None], now: datetime.datetime
) -> Outcome:
    if deps.default_tracking_uri is None:
        progress, delay = plan.unavailable_progress(
            mv,
            reasons.MLFLOW_NOT_CONFIGURED,
            "the operator has no MLflow tracking URI (--mlflow-tracking-uri)",
            now,
            deps.jitter(),
        )
        return await _write(mv, deps, memory, progress, now, retry_after=delay)
    waiting = plan.backing_off(mv.status, now)
    if waiting is not None:
        # A timer tick or an edit during backoff must not turn into a retry storm.
        return Outcome([], retry_after=waiting)
    registry = deps.registry_for(deps.default_tracking_uri)
    try:
        progress = await asyncio.to_thread(_converge, mv, deps, registry, now)
    except AdapterError as error:
        if isinstance(error, UnavailableError) and error.service != SERVICE:
            raise  # the apiserver itself: kopf's own retry, nothing to record in status
        reason = (
            reasons.MLFLOW_UNAVAILABLE
            if isinstance(error, UnavailableError)
            else reasons.MLFLOW_REJECTED
        )
        progress, delay = plan.unavailable_progress(mv, reason, error.message, now, deps.jitter())
        return await _write(mv, deps, memory, progress, now, retry_after=delay)
    retry_after = plan.REGISTERING_POLL_SECONDS if progress.phase == "Registering" else None
    return await _write(mv, deps, memory, progress, now, retry_after=retry_after)


def _converge(
    mv: ModelVersion, deps: ModelVersionDeps, registry: MlflowRegistry, now: datetime.datetime
) -> plan.Progress:
    """Blocking: every registry and cluster call of one pass, in order."""
    before = mv.status or ModelVersionStatus()
    uid, model_name = str(mv.metadata.uid), mv.spec.model_name
    events: list[EventIntent] = []
    keep = _keep_one(mv, registry, registry.versions_owned_by(model_name, uid), events)
    source: plan.ResolvedSource | None = None
    if keep is None:
        adopted = mv.spec.source.version
        if adopted is not None:
            found = registry.get_version(model_name, str(adopted))
            if found is None:
                blocked = plan.SourceBlocked(
                    reasons.VERSION_NOT_FOUND,
                    f"version {adopted} of registered model {model_name} does not exist",
                    failed=True,
                )
                return plan.Progress(phase="Failed", source_blocked=blocked)
            keep = registry.adopt_version(model_name, found.version, owner_uid=uid)
            events.append(
                EventIntent("Normal", reasons.VERSION_ADOPTED, f"adopted version {keep.version}")
            )
            deps.metrics.registered("adopted")
        else:
            resolved = _resolve_source(mv, deps, registry)
            if isinstance(resolved, plan.SourceBlocked):
                return plan.Progress(
                    phase="Failed" if resolved.failed else "Pending", source_blocked=resolved
                )
            source = resolved
            keep = _register(mv, registry, resolved, events)
            deps.metrics.registered("created")
    if source is None and before.source is None:
        # The registration happened in a pass whose status write was lost, or adopted.
        recovered = None if mv.spec.source.version else _resolve_source(mv, deps, registry)
        source = recovered if isinstance(recovered, plan.ResolvedSource) else None
        source = source or plan.adopted_source(keep)

    state = plan.registration_state(keep)
    if state == "Registering":
        message = f"version {keep.version} is {keep.status}"
        return plan.Progress(
            phase="Registering",
            registered=(False, reasons.REGISTERING, message),
            source=source,
            version=keep.version,
            events=events,
        )
    if state == "Failed":
        message = f"version {keep.version} failed to register: {keep.status_message}"
        return plan.Progress(
            phase="Failed",
            registered=(False, reasons.REGISTRATION_FAILED, message),
            source=source,
            version=keep.version,
            events=events,
        )

    was_ready = before.phase == "Ready"
    updates = plan.tag_updates(plan.desired_version_tags(mv), keep.tags)
    for key, value in updates.items():
        registry.set_version_tag(model_name, keep.version, key, value)
    if updates and was_ready:
        changed = ", ".join(sorted(updates))
        events.append(
            EventIntent(
                "Warning",
                reasons.DRIFT_CORRECTED,
                f"tags changed in MLflow were set back: {changed}",
            )
        )
    for key in plan.dropped_tags(mv, keep.tags):
        registry.delete_version_tag(model_name, keep.version, key)
    description = mv.spec.description
    if description is not None and keep.description != description:
        registry.set_description(model_name, keep.version, description)
    signature, signature_read = _read_signature(registry, model_name, keep.version, before)
    aliases = _sync_aliases(mv, deps, registry, keep.version, before, now)
    return plan.Progress(
        phase="Ready",
        registered=(
            True,
            reasons.VERSION_READY,
            f"version {keep.version} of {model_name} is READY",
        ),
        source=source,
        version=keep.version,
        signature=signature,
        signature_read=signature_read,
        aliases=aliases,
        events=events,
    )


def _read_signature(
    registry: MlflowRegistry, model_name: str, version: str, before: ModelVersionStatus
) -> tuple[ModelSignature | None, tuple[bool, str, str] | None]:
    """The signature and the SignatureRead condition; nothing when read for good before.

    The signature is informative: an artifact store the operator cannot read (no
    credentials for a URI source) or a /tmp it cannot write must not hold the registration
    back, so a failure is a condition, not an error."""
    if plan.signature_settled(before):
        return None, None
    try:
        found = registry.signature(model_name, version)
    except AdapterError as error:
        return None, (False, reasons.SIGNATURE_UNAVAILABLE, error.message)
    if found is None:
        return None, (True, reasons.NO_SIGNATURE, "the MLmodel declares no signature")
    return (
        ModelSignature(inputs=found.inputs, outputs=found.outputs),
        (True, reasons.SIGNATURE_FOUND, "status.signature holds the MLmodel's signature"),
    )


def _keep_one(
    mv: ModelVersion,
    registry: MlflowRegistry,
    owned: list[VersionRecord],
    events: list[EventIntent],
) -> VersionRecord | None:
    keep, extras = plan.keep_oldest(owned)
    for extra in extras:
        registry.delete_version(mv.spec.model_name, extra.version)
        events.append(
            EventIntent(
                "Warning",
                reasons.DUPLICATE_VERSION_REMOVED,
                f"version {extra.version} duplicated version {keep.version if keep else '?'}"
                " for this object and was deleted",
            )
        )
    return keep if isinstance(keep, VersionRecord) else None


def _register(
    mv: ModelVersion,
    registry: MlflowRegistry,
    source: plan.ResolvedSource,
    events: list[EventIntent],
) -> VersionRecord:
    model_name, uid = mv.spec.model_name, str(mv.metadata.uid)
    settings = mv.spec.registered_model
    registry.ensure_registered_model(
        model_name,
        description=settings.description if settings else None,
        tags=settings.tags if settings else {},
    )
    created = registry.create_version(
        model_name,
        source=source.uri,
        owner_uid=uid,
        tags=plan.registration_tags(mv),
        run_id=source.run_id,
        model_id=source.model_id,
        description=mv.spec.description,
    )
    events.append(
        EventIntent(
            "Normal",
            reasons.VERSION_CREATED,
            f"registered {source.uri} as version {created.version} of {model_name}",
        )
    )
    # Another creator (a second replica during a leader hand-over) may have registered in
    # the same moment: the oldest stays, whichever pass observes the pair.
    keep = _keep_one(mv, registry, registry.versions_owned_by(model_name, uid), events)
    return keep or created


def _resolve_source(
    mv: ModelVersion, deps: ModelVersionDeps, registry: MlflowRegistry
) -> plan.ResolvedSource | plan.SourceBlocked:
    source = mv.spec.source
    if source.uri is not None:
        return plan.uri_source(source.uri)
    training_job = None
    if source.training_job_ref is not None:
        training_job = read_object(
            deps.cluster, TrainingJob, str(mv.metadata.namespace), source.training_job_ref.name
        )
    ref = plan.run_ref(mv, training_job)
    if ref is None:
        raise ValueError("a version source has no run to resolve")
    if isinstance(ref, plan.SourceBlocked):
        return ref
    try:
        run = registry.source_run(ref.run_id)
    except NotFoundError:
        return plan.resolve_run(ref, None, None)
    logged_model = registry.logged_model_id(run.experiment_id, run.run_id, ref.artifact_path)
    return plan.resolve_run(ref, run, logged_model)


def _sync_aliases(
    mv: ModelVersion,
    deps: ModelVersionDeps,
    registry: MlflowRegistry,
    version: str,
    before: ModelVersionStatus,
    now: datetime.datetime,
) -> plan.AliasPlan:
    model_name = mv.spec.model_name
    with deps.model_lock(model_name):
        model = registry.registered_model(model_name)
        aliases = model.aliases if model else {}
        tags = model.tags if model else {}
        verdicts = {
            alias: plan.claim_verdict(
                alias, owner, claimant_object(deps.cluster, owner), mv, version
            )
            for alias, owner in plan.foreign_claims(mv, tags).items()
        }
        aliases_plan = plan.plan_aliases(
            mv,
            version=version,
            model_aliases=aliases,
            model_tags=tags,
            verdicts=verdicts,
            previously_held=before.aliases,
            now=now,
        )
        for key, value in aliases_plan.claims.items():
            registry.set_model_tag(model_name, key, value)
        for alias in aliases_plan.set_aliases:
            registry.set_alias(model_name, alias, version)
        for alias in aliases_plan.remove_aliases:
            registry.delete_alias(model_name, alias)
        for key in aliases_plan.releases:
            registry.delete_model_tag(model_name, key)
        for key, value in aliases_plan.version_tags.items():
            registry.set_version_tag(model_name, version, key, value)
    return aliases_plan


async def _write(
    mv: ModelVersion,
    deps: ModelVersionDeps,
    memory: ObjectMemory[None],
    progress: plan.Progress,
    now: datetime.datetime,
    *,
    retry_after: float | None,
) -> Outcome:
    planned: StatusPlan = plan.status_plan(mv, progress, now)
    events = await write_status(deps.cluster, mv, memory, planned)
    if planned.changed:
        _record_transition(mv, deps.metrics, progress, now)
    return Outcome(events, retry_after=retry_after)


def _record_transition(
    mv: ModelVersion, metrics: RegistrationMetrics, progress: plan.Progress, now: datetime.datetime
) -> None:
    before = mv.status.phase if mv.status else None
    if progress.phase == before:
        return
    if progress.phase == "Ready" and mv.metadata.creation_timestamp is not None:
        metrics.ready((now - mv.metadata.creation_timestamp).total_seconds())
    if progress.phase == "Failed":
        metrics.registered("failed")


async def finalize_modelversion(
    mv: ModelVersion, deps: ModelVersionDeps, attempt: int
) -> float | None:
    """Apply `deletionPolicy` to this object's version and give up its alias claims.

    Returns the delay before the next attempt while MLflow cannot be reached or refuses
    (the finalizer stays until the policy is applied), None once done.
    """
    if deps.default_tracking_uri is None:
        return None
    registry = deps.registry_for(deps.default_tracking_uri)
    try:
        await asyncio.to_thread(_finalize, mv, deps, registry)
    except AdapterError:
        return backoff_seconds(attempt + 1, deps.jitter())
    return None


def _finalize(mv: ModelVersion, deps: ModelVersionDeps, registry: MlflowRegistry) -> None:
    model_name = mv.spec.model_name
    policy = mv.spec.deletion_policy
    with deps.model_lock(model_name):
        owned = registry.versions_owned_by(model_name, str(mv.metadata.uid))
        model = registry.registered_model(model_name)
        if model is None:
            return
        for found in owned:
            if policy == "Archive":
                registry.set_version_tag(model_name, found.version, plan.ARCHIVED_TAG, "true")
                for alias, version in model.aliases.items():
                    if version == found.version:
                        registry.delete_alias(model_name, alias)
            elif policy == "Delete":
                registry.delete_version(model_name, found.version)
        for key in plan.release_all(mv, model.tags):
            registry.delete_model_tag(model_name, key)
