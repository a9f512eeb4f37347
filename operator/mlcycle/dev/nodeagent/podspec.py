"""The pod as the agent reads it: the API's JSON parsed once into frozen views.

Everything downstream (env resolution, probes, status) takes these views, never the raw
JSON, so a field is read in one place and named the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mlcycle.dev.nodeagent.quantity import parse_quantity

Json = Mapping[str, Any]

# Deleting a pod locally should not keep a test waiting for a minute-long grace period.
MAX_GRACE_PERIOD_SECONDS = 30


@dataclass(frozen=True)
class EnvVarSource:
    kind: Literal["secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef", "unsupported"]
    # object name for secret/config map refs; unused for field/resource refs
    name: str = ""
    # key for secret/config map refs, fieldPath for fieldRef, resource for resourceFieldRef
    key: str = ""
    optional: bool = False
    container_name: str = ""
    divisor: str = "1"


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str = ""
    source: EnvVarSource | None = None


@dataclass(frozen=True)
class EnvFromSource:
    kind: Literal["secretRef", "configMapRef"]
    name: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True)
class ProbeSpec:
    kind: Literal["httpGet", "tcpSocket", "exec", "grpc"]
    port: int | str = 0
    host: str = ""
    path: str = "/"
    scheme: str = "HTTP"
    http_headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    initial_delay_seconds: float = 0
    period_seconds: float = 10
    timeout_seconds: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str = ""
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    working_dir: str = ""
    named_ports: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    requests: Mapping[str, str] = field(default_factory=dict)
    readiness_probe: ProbeSpec | None = None
    liveness_probe: ProbeSpec | None = None
    startup_probe: ProbeSpec | None = None
    termination_message_path: str = "/dev/termination-log"
    termination_message_policy: str = "File"

    @property
    def memory_limit_bytes(self) -> int | None:
        limit = self.limits.get("memory")
        return int(parse_quantity(limit)) if limit is not None else None


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    uid: str
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_name: str = ""
    service_account_name: str = ""
    automount_service_account_token: bool = True
    hostname: str = ""
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    init_containers: tuple[ContainerSpec, ...] = ()
    containers: tuple[ContainerSpec, ...] = ()
    termination_grace_period_seconds: int = 30
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    readiness_gates: tuple[str, ...] = ()
    phase: str = "Pending"
    pod_ip: str = ""
    start_time: str = ""
    conditions: tuple[Json, ...] = ()
    init_container_statuses: tuple[Json, ...] = ()
    container_statuses: tuple[Json, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def grace_period_seconds(self) -> int:
        grace = self.deletion_grace_period_seconds
        if grace is None:
            grace = self.termination_grace_period_seconds
        return max(0, min(grace, MAX_GRACE_PERIOD_SECONDS))

    @property
    def is_terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _parse_env_var(raw: Json) -> EnvVar:
    value_from = raw.get("valueFrom")
    if not value_from:
        return EnvVar(name=raw["name"], value=str(raw.get("value", "")))
    if "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
        kind: Literal["secretKeyRef", "configMapKeyRef"] = (
            "secretKeyRef" if "secretKeyRef" in value_from else "configMapKeyRef"
        )
        ref = value_from[kind]
        source = EnvVarSource(
            kind=kind,
            name=ref.get("name", ""),
            key=ref.get("key", ""),
            optional=bool(ref.get("optional", False)),
        )
    elif "fieldRef" in value_from:
        source = EnvVarSource(kind="fieldRef", key=value_from["fieldRef"].get("fieldPath", ""))
    elif "resourceFieldRef" in value_from:
        ref = value_from["resourceFieldRef"]
        source = EnvVarSource(
            kind="resourceFieldRef",
            key=ref.get("resource", ""),
            container_name=ref.get("containerName", ""),
            divisor=str(ref.get("divisor", "1")),
        )
    else:
        # Reported when the container is created, not when the pod is parsed, so one odd
        # variable fails that container only.
        source = EnvVarSource(kind="unsupported", key=f"valueFrom {sorted(value_from)}")
    return EnvVar(name=raw["name"], source=source)


def _parse_env_from(raw: Json) -> EnvFromSource:
    kind: Literal["secretRef", "configMapRef"] = (
        "secretRef" if "secretRef" in raw else "configMapRef"
    )
    ref = raw.get(kind, {})
    return EnvFromSource(
        kind=kind,
        name=ref.get("name", ""),
        prefix=raw.get("prefix", ""),
        optional=bool(ref.get("optional", False)),
    )


def parse_probe(raw: Json | None) -> ProbeSpec | None:
    if not raw:
        return None
    timing = {
        "initial_delay_seconds": float(raw.get("initialDelaySeconds", 0)),
        "period_seconds": float(raw.get("periodSeconds", 10)),
        "timeout_seconds": float(raw.get("timeoutSeconds", 1)),
        "success_threshold": int(raw.get("successThreshold", 1)),
        "failure_threshold": int(raw.get("failureThreshold", 3)),
    }
    if "httpGet" in raw:
        action = raw["httpGet"]
        headers = tuple((h["name"], h.get("value", "")) for h in action.get("httpHeaders", []))
        return ProbeSpec(
            kind="httpGet",
            port=action.get("port", 0),
            host=action.get("host", ""),
            path=action.get("path", "/") or "/",
            scheme=action.get("scheme", "HTTP"),
            http_headers=headers,
            **timing,  # type: ignore[arg-type]
        )
    if "tcpSocket" in raw:
        action = raw["tcpSocket"]
        return ProbeSpec(
            kind="tcpSocket",
            port=action.get("port", 0),
            host=action.get("host", ""),
            **timing,  # type: ignore[arg-type]
        )
    if "exec" in raw:
        return ProbeSpec(
            kind="exec",
            command=tuple(raw["exec"].get("command", [])),
            **timing,  # type: ignore[arg-type]
        )
    if "grpc" in raw:
        return ProbeSpec(kind="grpc", port=raw["grpc"].get("port", 0), **timing)  # type: ignore[arg-type]
    return None


def parse_container(raw: Json) -> ContainerSpec:
    resources = raw.get("resources") or {}
    command = raw.get("command")
    return ContainerSpec(
        name=raw["name"],
        image=raw.get("image", ""),
        command=tuple(command) if command else None,
        args=tuple(raw.get("args") or ()),
        env=tuple(_parse_env_var(e) for e in raw.get("env") or ()),
        env_from=tuple(_parse_env_from(e) for e in raw.get("envFrom") or ()),
        working_dir=raw.get("workingDir", ""),
        named_ports={
            p["name"]: int(p["containerPort"]) for p in raw.get("ports") or () if p.get("name")
        },
        limits={k: str(v) for k, v in (resources.get("limits") or {}).items()},
        requests={k: str(v) for k, v in (resources.get("requests") or {}).items()},
        readiness_probe=parse_probe(raw.get("readinessProbe")),
        liveness_probe=parse_probe(raw.get("livenessProbe")),
        startup_probe=parse_probe(raw.get("startupProbe")),
        termination_message_path=raw.get("terminationMessagePath", "/dev/termination-log"),
        termination_message_policy=raw.get("terminationMessagePolicy", "File"),
    )


def parse_pod(raw: Json) -> PodView:
    metadata = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    grace = metadata.get("deletionGracePeriodSeconds")
    return PodView(
        namespace=metadata.get("namespace", "default"),
        name=metadata["name"],
        uid=metadata.get("uid", ""),
        resource_version=metadata.get("resourceVersion", ""),
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        node_name=spec.get("nodeName", ""),
        service_account_name=spec.get("serviceAccountName", ""),
        automount_service_account_token=spec.get("automountServiceAccountToken") is not False,
        hostname=spec.get("hostname", ""),
        restart_policy=spec.get("restartPolicy", "Always"),
        init_containers=tuple(parse_container(c) for c in spec.get("initContainers") or ()),
        containers=tuple(parse_container(c) for c in spec.get("containers") or ()),
        termination_grace_period_seconds=int(spec.get("terminationGracePeriodSeconds", 30)),
        deletion_timestamp=metadata.get("deletionTimestamp"),
        deletion_grace_period_seconds=int(grace) if grace is not None else None,
        readiness_gates=tuple(g["conditionType"] for g in spec.get("readinessGates") or ()),
        phase=status.get("phase", "Pending"),
        pod_ip=status.get("podIP", ""),
        start_time=status.get("startTime", ""),
        conditions=tuple(status.get("conditions") or ()),
        init_container_statuses=tuple(status.get("initContainerStatuses") or ()),
        container_statuses=tuple(status.get("containerStatuses") or ()),
    )
