"""InferenceService: resolve the version to serve, read the Deployments (from the
watch-fed indexes) and, when an analysis is due, the routers' metrics; plan the rollout;
write the registry; apply the children of the traffic mode; write status.

Level-triggered: the object's own events and a short timer all call
`reconcile_inferenceservice`; the rollout state it advances lives in status only.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from mlcycle.adapters import routermetrics
from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.errors import AdapterError, UnavailableError
from mlcycle.adapters.metrics import RolloutMetrics
from mlcycle.adapters.registry import MlflowRegistry
from mlcycle.api.v1alpha1 import API_VERSION, InferenceService, ModelVersion
from mlcycle.api.v1alpha1.inferenceservice import CounterSample, InferenceServiceStatus
from mlcycle.plan import inferenceservice as plan
from mlcycle.plan import reasons
from mlcycle.plan.conditions import EventIntent

# MLflow has no watch: an alias is looked up again this often (a moved alias starts a
# rollout within this time), not on every tick of the rollout timer.
RESOLVE_SECONDS = 10.0
# Children are applied when what they should be changed; once in a while anyway, so an
# edit or a deletion by hand of a child the indexes do not follow is undone.
REAPPLY_SECONDS = 300.0


class Children(Protocol):
    """Deployments and pods of each InferenceService as the operator's watches last saw
    them (by the object's uid): no API call per object per tick."""

    def deployments(self, uid: str) -> Sequence[Mapping[str, Any]]: ...

    def pods(self, uid: str) -> Sequence[Mapping[str, Any]]: ...

    def model_version(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...


class ScalarQueries(Protocol):
    """A Prometheus client (`adapters.prometheus.PrometheusClient`): one value per query,
    None when the query returns nothing; raises UnavailableError."""

    def query_scalar(self, query: str) -> float | None: ...


TrafficLayer = Callable[[InferenceService, plan.RolloutPlan], list[dict[str, Any]]]


@dataclass
class InferenceServiceDeps:
    cluster: ClusterClient
    registry_for: Callable[[str], MlflowRegistry]
    default_tracking_uri: str | None
    metrics: RolloutMetrics
    read_router: Callable[[Sequence[str], str, str, str], CounterSample] = (
        routermetrics.read_backend
    )
    read_predictions: Callable[[Sequence[str], str, str], dict[str, float]] = (
        routermetrics.read_predictions
    )
    prometheus: ScalarQueries | None = None
    """Set when the operator is configured with a Prometheus URL."""
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    written_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The status each object got from this operator's last write, by uid."""
    resolved: dict[str, tuple[int | None, float, plan.Target | plan.Blocked]] = field(
        default_factory=dict
    )
    """By uid: (generation, monotonic time, result) of the last resolution."""
    applied: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)
    """(kind, namespace, name) → digest and monotonic time of the last apply."""

    def lock(self, uid: str) -> asyncio.Lock:
        # Own events and the timer may fire at once for one object.
        return self.locks.setdefault(uid, asyncio.Lock())


@dataclass(frozen=True)
class InferenceServiceOutcome:
    events: list[EventIntent]
    retry_after: float | None = None


def traffic_layer(mode: str) -> TrafficLayer | None:
    """The objects that split traffic, one function per `traffic.mode`."""
    if mode == "router":
        return plan.router_children
    return None


async def reconcile_inferenceservice(
    isvc: InferenceService, deps: InferenceServiceDeps, children: Children, now: datetime.datetime
) -> InferenceServiceOutcome:
    async with deps.lock(str(isvc.metadata.uid)):
        current = _with_latest_status(isvc, deps)
        return await _reconcile(current, deps, children, now)


def _with_latest_status(isvc: InferenceService, deps: InferenceServiceDeps) -> InferenceService:
    """Triggers queue on the lock with the body they were fired with; only this operator
    writes the status, so its own last write is the latest there is."""
    written = deps.written_status.get(str(isvc.metadata.uid))
    if written is None:
        return isvc
    return isvc.model_copy(update={"status": InferenceServiceStatus.model_validate(written)})


async def _reconcile(
    isvc: InferenceService, deps: InferenceServiceDeps, children: Children, now: datetime.datetime
) -> InferenceServiceOutcome:
    uid, namespace = str(isvc.metadata.uid), str(isvc.metadata.namespace)
    layer = traffic_layer(isvc.spec.traffic.mode)
    resolution = await _resolve(isvc, deps, children)
    target = resolution if isinstance(resolution, plan.Target) else None
    blocked = resolution if isinstance(resolution, plan.Blocked) else None
    deployments = children.deployments(uid)
    sample = None
    queries = None
    status = isvc.status or InferenceServiceStatus()
    if status.canary is not None and plan.analysis_due(isvc, now):
        pods = children.pods(uid)
        sample = await _read_router(isvc, deps, pods, status.canary.version)
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
    # The registry first: a status write lost after it leaves the same decision to be
    # made again, and the writes (an alias, tags) are the same again.
    writes_failed = await _write_registry(deps, rollout.registry_writes)
    if writes_failed is not None:
        return InferenceServiceOutcome(
            [EventIntent("Warning", reasons.REGISTRY_WRITE_FAILED, writes_failed)], retry_after=5
        )
    if layer is None:
        events.append(
            EventIntent(
                "Warning",
                reasons.TRAFFIC_MODE_NOT_SUPPORTED,
                f"traffic.mode {isvc.spec.traffic.mode} is not supported by this operator",
            )
        )
    else:
        model_name = target.model_name if target else (status.model_name or "")
        manifests = plan.server_children(isvc, rollout, model_name, deps.default_tracking_uri)
        if rollout.stable is not None:
            # Nothing to route to before a first version resolves.
            manifests.extend(layer(isvc, rollout))
        await _apply(deps, manifests, deployments)
        for kind, name in plan.stale_server_children(deployments, rollout):
            await asyncio.to_thread(deps.cluster.delete, _API_VERSIONS[kind], kind, namespace, name)
            deps.applied.pop((kind, namespace, name), None)
    if rollout.clear_annotations:
        await asyncio.to_thread(
            deps.cluster.remove_annotations,
            API_VERSION,
            "InferenceService",
            namespace,
            str(isvc.metadata.name),
            rollout.clear_annotations,
        )
    planned = plan.status_plan(isvc, observed, rollout, now)
    if planned.changed:
        written = await asyncio.to_thread(
            deps.cluster.patch_status,
            API_VERSION,
            "InferenceService",
            namespace,
            str(isvc.metadata.name),
            planned.status,
        )
        deps.written_status[uid] = written
    _record_metrics(isvc, deps.metrics, rollout)
    events.extend(event for event in planned.events if event not in events)
    return InferenceServiceOutcome(events, plan.seconds_to_next_decision(isvc, now))


_API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1"}


async def _resolve(
    isvc: InferenceService, deps: InferenceServiceDeps, children: Children
) -> plan.Target | plan.Blocked:
    """The version the spec asks for. A ModelVersion from the watch-fed index (its status
    says Ready and approved); a registry version or alias from MLflow, at most every
    RESOLVE_SECONDS for one generation of the spec."""
    model = isvc.spec.model
    if model.model_version_ref is not None:
        body = children.model_version(str(isvc.metadata.namespace), model.model_version_ref.name)
        try:
            mv = ModelVersion.from_body(body) if body is not None else None
        except ValidationError:
            mv = None
        return plan.target_from_model_version(isvc, mv)
    uid = str(isvc.metadata.uid)
    cached = deps.resolved.get(uid)
    generation = isvc.metadata.generation
    if (
        cached is not None
        and cached[0] == generation
        and time.monotonic() - cached[1] < RESOLVE_SECONDS
    ):
        return cached[2]
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
    deps.resolved[uid] = (generation, time.monotonic(), result)
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
        return plan.Target(name, version)
    record = registry.get_version(name, str(model.version))
    if record is None:
        return plan.Blocked(
            reasons.VERSION_NOT_FOUND,
            f"version {model.version} of registered model {name} does not exist",
            failed=True,
        )
    return plan.Target(name, record.version)


async def _read_router(
    isvc: InferenceService,
    deps: InferenceServiceDeps,
    pods: Sequence[Mapping[str, Any]],
    version: str | None,
) -> CounterSample | None:
    addresses = plan.router_pod_addresses(pods)
    try:
        return await asyncio.to_thread(
            deps.read_router, addresses, str(isvc.metadata.name), "canary", str(version)
        )
    except UnavailableError:
        return None  # the plan holds the step: no verdict without figures


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
        except UnavailableError:
            values[check.name] = None
    return values


async def _write_registry(
    deps: InferenceServiceDeps, writes: Sequence[plan.RegistryWrite]
) -> str | None:
    """The outcome written back to MLflow; a message when it could not be."""
    if not writes or deps.default_tracking_uri is None:
        return None
    registry = deps.registry_for(deps.default_tracking_uri)

    def write_all() -> None:
        for write in writes:
            for key, value in write.tags.items():
                registry.set_version_tag(write.model_name, write.version, key, value)
            if write.alias is not None:
                registry.set_alias(write.model_name, write.alias, write.version)

    try:
        await asyncio.to_thread(write_all)
    except AdapterError as error:
        return f"rollout outcome not written to MLflow yet: {error.message}"
    return None


async def _apply(
    deps: InferenceServiceDeps,
    manifests: Sequence[Mapping[str, Any]],
    deployments: Sequence[Mapping[str, Any]],
) -> None:
    """Server-side apply of what changed since this operator last applied it (or is
    missing from the Deployments index, or was applied long ago)."""
    present = {str((d.get("metadata") or {}).get("name")) for d in deployments}
    now = time.monotonic()
    for manifest in manifests:
        metadata = manifest["metadata"]
        key = (str(manifest["kind"]), str(metadata["namespace"]), str(metadata["name"]))
        digest = plan.manifest_digest(manifest)
        last = deps.applied.get(key)
        missing = manifest["kind"] == "Deployment" and key[2] not in present
        fresh = last is not None and last[0] == digest and now - last[1] < REAPPLY_SECONDS
        if fresh and not missing:
            continue
        await asyncio.to_thread(deps.cluster.apply, manifest)
        deps.applied[key] = (digest, now)


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
    """Memory kept for a deleted object (its children go by garbage collection)."""
    uid = str(isvc.metadata.uid)
    deps.written_status.pop(uid, None)
    deps.resolved.pop(uid, None)
    deps.locks.pop(uid, None)
    namespace, prefix = str(isvc.metadata.namespace), plan.child_name(isvc)
    for key in [key for key in deps.applied if key[1] == namespace and key[2].startswith(prefix)]:
        deps.applied.pop(key, None)
    deps.metrics.forget(namespace, str(isvc.metadata.name))
