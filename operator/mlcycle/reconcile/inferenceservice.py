"""InferenceService: resolve the version to serve, read the Deployments (from the
watch-fed indexes) and, when an analysis is due, the routers' metrics; plan the rollout;
apply the children of the traffic mode; write the registry; write status.

Level-triggered: the object's own events and a short timer all call
`reconcile_inferenceservice`; the rollout state it advances lives in status only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from mlcycle.adapters import servingmetrics
from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.errors import (
    AdapterError,
    InvalidError,
    KindNotServedError,
    UnavailableError,
)
from mlcycle.adapters.metrics import RolloutMetrics
from mlcycle.adapters.registry import MlflowRegistry
from mlcycle.api.v1alpha1 import InferenceService, ModelVersion
from mlcycle.api.v1alpha1.inferenceservice import (
    CounterSample,
    InferenceServiceStatus,
    PendingRegistryWrite,
)
from mlcycle.plan import alias_ownership as claims
from mlcycle.plan import inferenceservice as plan
from mlcycle.plan import reasons
from mlcycle.plan.approval import APPROVAL_REQUIRED_TAG
from mlcycle.plan.conditions import EventIntent
from mlcycle.plan.inferenceservice import registry_writeback
from mlcycle.plan.traffic import traffic_children, traffic_mode
from mlcycle.reconcile.children import Refused, apply_children, child_key
from mlcycle.reconcile.memory import Applied, Checked, Memory, ObjectMemory
from mlcycle.reconcile.objects import claimant_object
from mlcycle.reconcile.outcome import Outcome
from mlcycle.reconcile.status import with_written_status, write_status

logger = logging.getLogger(__name__)

# MLflow has no watch: an alias is looked up again this often (a moved alias starts a
# rollout within this time), not on every tick of the rollout timer.
RESOLVE_SECONDS = 10.0
# Children are applied when what they should be changed; once in a while anyway, so an
# edit or a deletion by hand of a child the indexes do not follow is undone.
REAPPLY_SECONDS = 300.0

Resolution = plan.Target | plan.Blocked
"""What the memory record keeps of the last look-up in the registry."""


class Children(Protocol):
    """Deployments and pods of each InferenceService as the operator's watches last saw
    them (by the object's uid): no API call per object per tick."""

    def deployments(self, uid: str) -> Sequence[Mapping[str, Any]]: ...

    def pods(self, uid: str) -> Sequence[Mapping[str, Any]]: ...

    def model_version(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def model_versions_tracking(self, model_name: str, version: str) -> Sequence[Mapping[str, Any]]:
        """The ModelVersions whose status says they track this registry version."""
        ...


class ScalarQueries(Protocol):
    """A Prometheus client (`adapters.prometheus.PrometheusClient`): one value per query,
    None when the query returns nothing; raises UnavailableError."""

    def query_scalar(self, query: str) -> float | None: ...


@dataclass
class InferenceServiceDeps:
    cluster: ClusterClient
    registry_for: Callable[[str], MlflowRegistry]
    default_tracking_uri: str | None
    metrics: RolloutMetrics
    read_router: Callable[[Sequence[str], str, str, str], CounterSample] = (
        servingmetrics.read_backend
    )
    read_server: Callable[[Sequence[str], str, str], CounterSample] = servingmetrics.read_server
    read_predictions: Callable[[Sequence[str], str, str], dict[str, float]] = (
        servingmetrics.read_predictions
    )
    default_image: str = plan.DEFAULT_IMAGE
    """Of model-server and router pods whose spec names none."""
    mlflow_credentials_secret: str | None = None
    """Secret, in the InferenceService's namespace, of the model servers' MLflow credentials."""
    prometheus: ScalarQueries | None = None
    """Set when the operator is configured with a Prometheus URL."""
    model_lock: Callable[[str], AbstractContextManager[Any]] = lambda _name: nullcontext()
    """Serializes alias claims per registered model with the ModelVersion reconciler."""
    memory: Memory[Resolution] = field(default_factory=Memory)
    jitter: Callable[[], float] = random.random


async def reconcile_inferenceservice(
    isvc: InferenceService, deps: InferenceServiceDeps, children: Children, now: datetime.datetime
) -> Outcome:
    """One pass; its next one is the rollout tick's, never a retry of the handler."""
    memory = deps.memory.of(str(isvc.metadata.uid))
    async with memory.lock:
        current = with_written_status(isvc, memory, InferenceServiceStatus)
        return await _reconcile(current, deps, memory, children, now)


async def _reconcile(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    memory: ObjectMemory[Resolution],
    children: Children,
    now: datetime.datetime,
) -> Outcome:
    uid, namespace = str(isvc.metadata.uid), str(isvc.metadata.namespace)
    resolution = await _resolve(isvc, deps, memory, children, now)
    target = resolution if isinstance(resolution, plan.Target) else None
    blocked = resolution if isinstance(resolution, plan.Blocked) else None
    deployments = children.deployments(uid)
    sample = None
    queries = None
    status = isvc.status or InferenceServiceStatus()
    if status.canary is not None and plan.analysis_due(isvc, now):
        pods = children.pods(uid)
        sample = await _read_candidate(isvc, deps, pods, status)
        if sample is not None and isvc.spec.analysis.drift_max is not None:
            sample = await _with_predictions(isvc, deps, pods, sample, status)
        queries = await _prometheus_checks(isvc, deps)
    observed = plan.Observed(
        target=target,
        blocked=blocked,
        ready_replicas=plan.ready_replicas(deployments),
        router_ready=plan.router_ready(deployments),
        canary_sample=sample,
        queries=queries,
    )
    rollout = plan.plan_rollout(isvc, observed, now)
    events = list(rollout.events)
    model_name = target.model_name if target else (status.model_name or "")
    manifests = plan.server_children(
        isvc,
        rollout,
        model_name,
        deps.default_tracking_uri,
        deps.default_image,
        deps.mlflow_credentials_secret,
    )
    manifests.extend(traffic_children(isvc, rollout, deps.default_image))
    refused = await _apply(deps, memory, manifests, deployments, now)
    for kind, name in plan.stale_server_children(deployments, rollout):
        await asyncio.to_thread(deps.cluster.delete, _API_VERSIONS[kind], kind, namespace, name)
        memory.applied.pop(child_key(kind, namespace, name), None)
    # Traffic first, the registry after: MLflow being down never holds a rollback. A pass
    # lost before its status write decides the same again, and the writes (tags, an alias)
    # are the same again; writes that cannot land now stay queued in the status.
    if registry_writeback.due(rollout.pending_writes, now):
        landed, error, alias_conflicts = await _write_registry(isvc, deps, rollout.pending_writes)
        remaining, write_events = registry_writeback.after_attempt(
            rollout.pending_writes, landed, error, now, deps.jitter()
        )
        rollout = dataclasses.replace(rollout, pending_writes=remaining)
        events.extend([*alias_conflicts, *write_events])
    if refused is not None:
        observed = dataclasses.replace(observed, refused=refused)
    planned = plan.status_plan(isvc, observed, rollout, now)
    status_events = await write_status(deps.cluster, isvc, memory, planned)
    _record_metrics(isvc, deps.metrics, rollout)
    events.extend(event for event in status_events if event not in events)
    return Outcome(events)


_API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1"}


async def _resolve(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    memory: ObjectMemory[Resolution],
    children: Children,
    now: datetime.datetime,
) -> Resolution:
    """The version the spec asks for, once approved if it requires approval. The approval
    is read from the watch-fed index on every pass, so it takes effect at the next tick."""
    found = await _find_version(isvc, deps, memory, children, now)
    if isinstance(found, plan.Blocked):
        return found
    tracking = children.model_versions_tracking(found.model_name, found.version)
    return plan.approval_gate(found, _parsed_model_versions(tracking))


def _parsed_model_versions(bodies: Sequence[Mapping[str, Any]]) -> list[ModelVersion]:
    parsed = []
    for body in bodies:
        try:
            parsed.append(ModelVersion.from_body(body))
        except ValidationError:
            continue  # its own reconciler reports InvalidSpec; it approves nothing
    return parsed


async def _find_version(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    memory: ObjectMemory[Resolution],
    children: Children,
    now: datetime.datetime,
) -> Resolution:
    """A ModelVersion from the watch-fed index (its status says Ready); a registry version
    or alias from MLflow, at most every RESOLVE_SECONDS for one generation of the spec."""
    model = isvc.spec.model
    if model.model_version_ref is not None:
        body = children.model_version(str(isvc.metadata.namespace), model.model_version_ref.name)
        try:
            mv = ModelVersion.from_body(body) if body is not None else None
        except ValidationError:
            mv = None
        return plan.target_from_model_version(isvc, mv)
    cached = memory.checked
    generation = isvc.metadata.generation
    if (
        cached is not None
        and cached.generation == generation
        and now - cached.at < datetime.timedelta(seconds=RESOLVE_SECONDS)
    ):
        return cached.found
    if deps.default_tracking_uri is None:
        return plan.Blocked(
            reasons.MLFLOW_NOT_CONFIGURED,
            "the operator has no MLflow tracking URI (--mlflow-tracking-uri)",
        )
    registry = deps.registry_for(deps.default_tracking_uri)
    try:
        result = await asyncio.to_thread(_resolve_in_registry, isvc, registry)
    except AdapterError as error:
        return plan.Blocked(reasons.MLFLOW_UNAVAILABLE, error.message)
    memory.checked = Checked(now, generation, result)
    return result


def _resolve_in_registry(
    isvc: InferenceService, registry: MlflowRegistry
) -> plan.Target | plan.Blocked:
    model = isvc.spec.model
    name = str(model.name)
    if model.alias is not None:
        found = registry.registered_model(name)
        version = found.aliases.get(model.alias) if found is not None else None
        if version is None:
            return plan.Blocked(
                reasons.ALIAS_NOT_FOUND, f"registered model {name} has no alias {model.alias}"
            )
    else:
        version = str(model.version)
    record = registry.get_version(name, version)
    if record is None:
        return plan.Blocked(
            reasons.VERSION_NOT_FOUND,
            f"version {version} of registered model {name} does not exist",
            failed=model.alias is None,
        )
    return plan.Target(
        name,
        record.version,
        approval_required=record.tags.get(APPROVAL_REQUIRED_TAG) == "true",
    )


async def _read_candidate(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    pods: Sequence[Mapping[str, Any]],
    status: InferenceServiceStatus,
) -> CounterSample | None:
    """The candidate's cumulative counters, with the stable's requests and 4xx beside them
    (a candidate refusing what the stable answers fails). From the routers in router mode
    (they also count mirrored requests and agreement), from each version's own model
    servers in the other modes (whatever routed the requests, its servers answered them)."""
    version = str(status.canary.version if status.canary else None)
    try:
        candidate = await asyncio.to_thread(
            _read_track, isvc, deps, pods, status, "canary", version
        )
    except UnavailableError:
        return None  # the plan holds the step: no verdict without figures
    stable_version = status.stable.version if status.stable else None
    if stable_version is None:
        return candidate
    try:
        stable = await asyncio.to_thread(
            _read_track, isvc, deps, pods, status, "stable", stable_version
        )
    except UnavailableError:
        return candidate  # no stable figure: only the candidate's 5xx count
    return candidate.model_copy(
        update={"stable_requests": stable.requests, "stable_client_errors": stable.client_errors}
    )


def _read_track(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    pods: Sequence[Mapping[str, Any]],
    status: InferenceServiceStatus,
    track: plan.Track,
    version: str,
) -> CounterSample:
    if traffic_mode(isvc).counts_requests:
        addresses = plan.router_pod_addresses(pods)
        return deps.read_router(addresses, str(isvc.metadata.name), track, version)
    return deps.read_server(
        plan.server_pod_addresses(pods, version), str(status.model_name), version
    )


async def _with_predictions(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    pods: Sequence[Mapping[str, Any]],
    sample: CounterSample,
    status: InferenceServiceStatus,
) -> CounterSample:
    """The predicted classes of candidate and stable, for the drift check; left empty
    (drift not measured, the check skipped) when a server cannot be read."""
    model = str(status.model_name)
    tracks = (status.canary, status.stable)
    if any(track is None or track.version is None for track in tracks):
        return sample
    try:
        candidate, stable = [
            await asyncio.to_thread(
                deps.read_predictions,
                plan.server_pod_addresses(pods, str(track.version)),
                model,
                str(track.version),
            )
            for track in tracks
            if track is not None
        ]
    except UnavailableError:
        return sample
    return sample.model_copy(
        update={"candidate_predictions": candidate, "stable_predictions": stable}
    )


async def _prometheus_checks(
    isvc: InferenceService, deps: InferenceServiceDeps
) -> dict[str, float | None] | None:
    """spec.analysis.prometheus, run only by an operator configured with a Prometheus URL."""
    checks = isvc.spec.analysis.prometheus
    client = deps.prometheus
    if not checks or client is None:
        return None
    values: dict[str, float | None] = {}
    for check in checks:
        try:
            values[check.name] = await asyncio.to_thread(client.query_scalar, check.query)
        except AdapterError as error:
            # Unreachable, or a query Prometheus refuses: no figure, the step holds.
            logger.warning("Prometheus check %s: %s", check.name, error.message)
            values[check.name] = None
    return values


async def _write_registry(
    isvc: InferenceService, deps: InferenceServiceDeps, writes: Sequence[PendingRegistryWrite]
) -> tuple[int, str | None, list[EventIntent]]:
    """The outcomes written back to MLflow in order: how many landed, why the next one
    could not (None: all landed), and Events for an alias left alone because another
    object owns it."""
    if not writes or deps.default_tracking_uri is None:
        return len(writes), None, []
    registry = deps.registry_for(deps.default_tracking_uri)
    landed = 0
    conflicts: list[EventIntent] = []

    def write_all() -> None:
        nonlocal landed
        for write in writes:
            for key, value in write.tags.items():
                registry.set_version_tag(write.model_name, write.version, key, value)
            if write.alias is not None:
                with deps.model_lock(write.model_name):
                    owner = _claim_alias(isvc, deps, registry, write.model_name, write.alias)
                    if owner is None:
                        registry.set_alias(write.model_name, write.alias, write.version)
                    else:
                        conflicts.append(
                            EventIntent(
                                "Warning",
                                reasons.ALIAS_CONFLICT,
                                f"alias {write.alias} of {write.model_name} belongs to"
                                f" {owner.kind} {owner.namespace}/{owner.name}: version"
                                f" {write.version} was promoted without it",
                            )
                        )
            landed += 1

    try:
        await asyncio.to_thread(write_all)
    except AdapterError as error:
        return landed, error.message, conflicts
    return landed, None, conflicts


def _claim_alias(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    registry: MlflowRegistry,
    model_name: str,
    alias: str,
) -> claims.Claimant | None:
    """Takes the alias' claim for `isvc` unless the claim of another object stands against
    it; returns that object then. The ModelVersions' rule, so an alias has one owner and
    never flips."""
    model = registry.registered_model(model_name)
    value = (model.tags if model else {}).get(claims.claim_key(alias))
    owner = claims.claimant(value) if value else None
    if owner is not None and owner.uid == str(isvc.metadata.uid):
        return None
    if (
        owner is not None
        and claims.claim_verdict(alias, owner, claimant_object(deps.cluster, owner), isvc) != "Take"
    ):
        return owner
    registry.set_model_tag(model_name, claims.claim_key(alias), claims.claim_value(isvc))
    return None


async def _apply(
    deps: InferenceServiceDeps,
    memory: ObjectMemory[Resolution],
    manifests: Sequence[Mapping[str, Any]],
    deployments: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> tuple[str, str] | None:
    """Server-side apply of what changed since this operator last applied it (or is
    missing from the Deployments index, or was applied long ago). A manifest the API
    server refuses is sent again only after a backoff, or once it changes; the first
    refusal is returned as (reason, message) for the status."""
    present = {str((d.get("metadata") or {}).get("name")) for d in deployments}
    first_refusal: tuple[str, str] | None = None
    for manifest in manifests:
        metadata = manifest["metadata"]
        key = child_key(str(manifest["kind"]), str(metadata["namespace"]), str(metadata["name"]))
        digest = plan.manifest_digest(manifest)
        last = memory.applied.get(key)
        missing = manifest["kind"] == "Deployment" and str(metadata["name"]) not in present
        fresh = (
            last is not None
            and last.digest == digest
            and now - last.at < datetime.timedelta(seconds=REAPPLY_SECONDS)
        )
        # A refusal still backing off is reported again, however fresh the last apply.
        if fresh and not missing and memory.waiting(key, now, digest) is None:
            continue
        applied = await apply_children(
            deps.cluster,
            memory,
            key,
            [manifest],
            now,
            deps.jitter(),
            refusal_reason=_refusal_reason,
            digest=digest,
        )
        if isinstance(applied, Refused):
            first_refusal = first_refusal or (applied.reason, applied.message)
            continue
        memory.applied[key] = Applied(digest, now)
    return first_refusal


def _refusal_reason(error: InvalidError) -> str:
    if isinstance(error, KindNotServedError):
        return reasons.TRAFFIC_KIND_NOT_SERVED
    return reasons.CHILD_REFUSED


def _record_metrics(
    isvc: InferenceService, metrics: RolloutMetrics, rollout: plan.RolloutPlan
) -> None:
    namespace, name = str(isvc.metadata.namespace), str(isvc.metadata.name)
    canary = rollout.canary
    metrics.weight(namespace, name, (canary.weight or 0) if canary is not None else 0)
    if rollout.analysis is not None:
        metrics.analysed(rollout.analysis.outcome)
    if rollout.outcome is not None:
        metrics.finished(rollout.outcome.outcome, rollout.outcome.duration_seconds)


def forget_inferenceservice(isvc: InferenceService, deps: InferenceServiceDeps) -> None:
    """The rollout metrics of a deleted object (its children go by garbage collection, its
    memory record with the handlers' forgetting)."""
    deps.metrics.forget(str(isvc.metadata.namespace), str(isvc.metadata.name))
