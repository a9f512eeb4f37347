"""The node agent's decisions, kept free of I/O so they can be tested table-driven.

A pod arrives as the API's JSON; it is parsed once into the frozen views below. Environment
resolution takes the secrets and config maps the agent already read, status building takes
the agent's per-container runtime records and the clock as arguments. The rules follow the
kubelet (pkg/kubelet/kubelet_pods.go, third_party/forked/golang/expansion) closely enough
that Jobs, ReplicaSets and the endpoint controllers upstream behave as they would on a node.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Json = Mapping[str, Any]

# Condition types and reasons the kubelet writes; other controllers read these literally.
POD_READY_TO_START_CONTAINERS = "PodReadyToStartContainers"
INITIALIZED = "Initialized"
CONTAINERS_READY = "ContainersReady"
READY = "Ready"
AGENT_CONDITION_TYPES = (POD_READY_TO_START_CONTAINERS, INITIALIZED, CONTAINERS_READY, READY)

REASON_CONTAINER_CREATING = "ContainerCreating"
REASON_POD_INITIALIZING = "PodInitializing"
REASON_CREATE_CONTAINER_ERROR = "CreateContainerError"
REASON_CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
REASON_CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
REASON_COMPLETED = "Completed"
REASON_ERROR = "Error"
REASON_OOM_KILLED = "OOMKilled"
REASON_START_ERROR = "StartError"

# A container's terminationMessagePath (default /dev/termination-log) is a file inside its
# own filesystem; local processes share the host's, where that path is not ours to write.
# So the agent hands each container a file of its own in the state dir through this
# variable and reads the message from there: a program that writes to
# /dev/termination-log directly gets no termination message locally.
TERMINATION_MESSAGE_ENV = "MLCYCLE_TERMINATION_MESSAGE_PATH"
# Same caps as the kubelet: a termination message is at most 4 KiB, and the log fallback
# takes the last 80 lines but no more than 2 KiB of them.
TERMINATION_MESSAGE_MAX_BYTES = 4096
LOG_FALLBACK_MAX_LINES = 80
LOG_FALLBACK_MAX_BYTES = 2048

# The kubelet backs off 10s doubling to 5 minutes; locally a crash loop is usually a
# developer iterating on a script, and tests wait on restarts, so 1s doubling to 30s keeps
# the same shape at a tenth of the delay.
BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
# A container that ran this long without crashing starts its next back-off from scratch
# (the kubelet forgets a back-off entry after twice its maximum).
BACKOFF_RESET_AFTER_SECONDS = 2 * BACKOFF_MAX_SECONDS

# Deleting a pod locally should not keep a test waiting for a minute-long grace period.
MAX_GRACE_PERIOD_SECONDS = 30


class ContainerConfigError(Exception):
    """The container's configuration cannot be resolved yet (missing secret or key)."""


class ContainerCreateError(Exception):
    """The container cannot be run by this agent at all as specified."""


# ---- quantities -----------------------------------------------------------------------

_QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[a-zA-Z]*)$")


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "2Gi", "1e3") as an exact decimal."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"invalid quantity {text!r}")
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _QUANTITY_SUFFIXES[suffix]
    except (KeyError, InvalidOperation):
        raise ValueError(f"invalid quantity {text!r}") from None


# ---- the pod, parsed once -------------------------------------------------------------


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


# ---- environment ----------------------------------------------------------------------


def expand_references(text: str, lookup: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown or unclosed references stay as
    written (a port of third_party/forked/golang/expansion/expand.go)."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            advance = 1
            if following == "$":
                out.append("$")
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:
                    out.append("$(")
                else:
                    name = text[cursor + 2 : closer]
                    out.append(lookup.get(name, f"$({name})"))
                    advance = closer - cursor
            else:
                out.append("$" + following)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def referenced_objects(
    container: ContainerSpec,
) -> tuple[frozenset[str], frozenset[str]]:
    """(secret names, config map names) the container's env needs the agent to read."""
    secrets = {e.name for e in container.env_from if e.kind == "secretRef"}
    config_maps = {e.name for e in container.env_from if e.kind == "configMapRef"}
    for var in container.env:
        if var.source and var.source.kind == "secretKeyRef":
            secrets.add(var.source.name)
        elif var.source and var.source.kind == "configMapKeyRef":
            config_maps.add(var.source.name)
    return frozenset(secrets), frozenset(config_maps)


@dataclass(frozen=True)
class EnvInputs:
    """Everything env resolution reads besides the container itself.

    `secrets` and `config_maps` map an object name to its decoded data; a name missing
    from the mapping means the object does not exist.
    """

    secrets: Mapping[str, Mapping[str, str]]
    config_maps: Mapping[str, Mapping[str, str]]
    pod_ip: str
    host_ip: str
    # Used for limits a container does not set, as the kubelet does with allocatable.
    node_allocatable: Mapping[str, str]
    service_env: Mapping[str, str]


def _field_value(pod: PodView, path: str, inputs: EnvInputs) -> str:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account_name,
        "status.podIP": inputs.pod_ip,
        "status.podIPs": inputs.pod_ip,
        "status.hostIP": inputs.host_ip,
        "status.hostIPs": inputs.host_ip,
    }
    if path in simple:
        return simple[path]
    subscript = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if subscript:
        source = pod.labels if subscript.group(1) == "labels" else pod.annotations
        return source.get(subscript.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        source = pod.labels if path == "metadata.labels" else pod.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted(source.items()))
    raise ContainerCreateError(f"unsupported fieldRef fieldPath {path!r}")


def _resource_value(
    pod: PodView, container: ContainerSpec, source: EnvVarSource, inputs: EnvInputs
) -> str:
    target = container
    if source.container_name:
        named = [
            c for c in (*pod.init_containers, *pod.containers) if c.name == source.container_name
        ]
        if not named:
            raise ContainerCreateError(f"resourceFieldRef: no container {source.container_name!r}")
        target = named[0]
    kind, _, resource = source.key.partition(".")
    if kind not in ("limits", "requests") or not resource:
        raise ContainerCreateError(f"unsupported resourceFieldRef resource {source.key!r}")
    declared = target.limits if kind == "limits" else target.requests
    raw = declared.get(resource)
    if raw is None:
        raw = inputs.node_allocatable.get(resource, "0") if kind == "limits" else "0"
    divisor = parse_quantity(source.divisor) or Decimal(1)
    # Rounded up like the kubelet, so a 250m request with the default divisor reads as 1.
    return str(math.ceil(parse_quantity(raw) / divisor))


def _is_valid_env_name(name: str) -> bool:
    return bool(name) and "=" not in name and "\x00" not in name


def resolve_env(pod: PodView, container: ContainerSpec, inputs: EnvInputs) -> dict[str, str]:
    """The container's environment: envFrom, then env (later wins), then service variables.

    Raises ContainerConfigError when a required secret, config map or key is missing, the
    case the kubelet reports as CreateContainerConfigError and retries.
    """
    env: dict[str, str] = {}
    for env_from in container.env_from:
        if env_from.kind == "secretRef":
            data = inputs.secrets.get(env_from.name)
            what = "secret"
        else:
            data = inputs.config_maps.get(env_from.name)
            what = "configmap"
        if data is None:
            if env_from.optional:
                continue
            raise ContainerConfigError(f'{what} "{env_from.name}" not found')
        for key, value in data.items():
            name = env_from.prefix + key
            if _is_valid_env_name(name):
                env[name] = value

    for var in container.env:
        source = var.source
        if source is None:
            env[var.name] = expand_references(var.value, {**inputs.service_env, **env})
        elif source.kind in ("secretKeyRef", "configMapKeyRef"):
            is_secret = source.kind == "secretKeyRef"
            objects = inputs.secrets if is_secret else inputs.config_maps
            data = objects.get(source.name)
            if data is None:
                if source.optional:
                    continue
                what = "secret" if is_secret else "configmap"
                raise ContainerConfigError(f'{what} "{source.name}" not found')
            if source.key not in data:
                if source.optional:
                    continue
                what = "Secret" if is_secret else "ConfigMap"
                raise ContainerConfigError(
                    f"couldn't find key {source.key} in {what} {pod.namespace}/{source.name}"
                )
            env[var.name] = data[source.key]
        elif source.kind == "fieldRef":
            env[var.name] = _field_value(pod, source.key, inputs)
        elif source.kind == "unsupported":
            raise ContainerCreateError(f"env {var.name}: unsupported {source.key}")
        else:
            env[var.name] = _resource_value(pod, container, source, inputs)

    for name, value in inputs.service_env.items():
        env.setdefault(name, value)
    return env


def service_env(apiserver_host: str, apiserver_port: int) -> dict[str, str]:
    """The variables in-cluster clients use to find the apiserver (the `kubernetes` Service's
    link variables), pointing at the real apiserver since there is no service proxy here."""
    return {
        "KUBERNETES_SERVICE_HOST": apiserver_host,
        "KUBERNETES_SERVICE_PORT": str(apiserver_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(apiserver_port),
        "KUBERNETES_PORT": f"tcp://{apiserver_host}:{apiserver_port}",
    }


SERVICE_ACCOUNT_TOKEN_SECONDS = 24 * 3600


def wants_service_account_token(pod: PodView) -> bool:
    return bool(pod.service_account_name) and pod.automount_service_account_token


def service_account_kubeconfig(
    apiserver_host: str, apiserver_port: int, ca_file: str | None, namespace: str, token: str
) -> dict[str, Any]:
    """A kubeconfig holding a pod's service-account token.

    The kubelet mounts the token at /var/run/secrets/kubernetes.io/serviceaccount; pods
    here are processes sharing one filesystem, so each gets its own file and `KUBECONFIG`
    instead, which every Kubernetes client library reads. The pod then acts with its
    service account's RBAC, as on a real node."""
    cluster: dict[str, Any] = {"server": f"https://{apiserver_host}:{apiserver_port}"}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [
            {
                "name": "pod",
                "context": {
                    "cluster": "cluster",
                    "user": "service-account",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "pod",
    }


def build_argv(container: ContainerSpec, env: Mapping[str, str]) -> list[str]:
    """command + args with `$(VAR)` expanded; an image entrypoint cannot be run locally."""
    if not container.command:
        raise ContainerCreateError(
            f"container {container.name!r} has no command: the local node agent ignores "
            f"images (here {container.image or 'none'!r}) and cannot run their entrypoint; "
            "set command, e.g. [python, -m, your.module]"
        )
    return [expand_references(part, env) for part in (*container.command, *container.args)]


def pod_hostname(pod: PodView) -> str:
    return (pod.hostname or pod.name)[:63]


# ---- restarts ---------------------------------------------------------------------------


def should_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


def init_should_restart(restart_policy: str, exit_code: int) -> bool:
    """An init container is retried until it succeeds unless the pod never restarts."""
    return exit_code != 0 and restart_policy != "Never"


def restart_backoff_seconds(consecutive_restarts: int) -> float:
    """Delay before the n-th consecutive restart (n >= 1): 1s, 2s, 4s, … capped at 30s."""
    if consecutive_restarts <= 0:
        return 0.0
    exponent = min(consecutive_restarts - 1, 16)
    return float(min(BACKOFF_INITIAL_SECONDS * 2**exponent, BACKOFF_MAX_SECONDS))


def exit_code_and_signal(returncode: int) -> tuple[int, int | None]:
    """Popen's returncode (negative for a signal) as a container runtime reports it."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def terminated_reason(exit_code: int, oom_killed: bool) -> str:
    if oom_killed:
        return REASON_OOM_KILLED
    return REASON_COMPLETED if exit_code == 0 else REASON_ERROR


def log_tail(log: bytes) -> str:
    lines = log.splitlines(keepends=True)[-LOG_FALLBACK_MAX_LINES:]
    tail = b"".join(lines)[-LOG_FALLBACK_MAX_BYTES:]
    return tail.decode("utf-8", errors="replace")


def termination_message(message_file: bytes, log_end: bytes, policy: str, exit_code: int) -> str:
    """What the container wrote to its termination message file, else (when its policy asks
    for it and it failed) the end of its log. `log_end` only needs to be the log's tail."""
    message = message_file[:TERMINATION_MESSAGE_MAX_BYTES].decode("utf-8", errors="replace")
    if not message.strip() and policy == "FallbackToLogsOnError" and exit_code != 0:
        return log_tail(log_end)
    return message


# ---- runtime records and status -------------------------------------------------------


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: datetime.datetime
    started_at: datetime.datetime | None = None
    signal: int | None = None
    message: str = ""
    container_id: str = ""


@dataclass(frozen=True)
class ContainerRecord:
    """What the agent knows of one container right now; exactly one state applies."""

    name: str
    image: str
    state: Literal["waiting", "running", "terminated"] = "waiting"
    waiting_reason: str = REASON_CONTAINER_CREATING
    waiting_message: str = ""
    started_at: datetime.datetime | None = None
    container_id: str = ""
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    restart_count: int = 0
    started: bool = False
    ready: bool = False

    def waiting(self, reason: str, message: str = "") -> ContainerRecord:
        return dataclasses.replace(
            self,
            state="waiting",
            waiting_reason=reason,
            waiting_message=message,
            started=False,
            ready=False,
        )

    def running(self, started_at: datetime.datetime, container_id: str) -> ContainerRecord:
        return dataclasses.replace(
            self,
            state="running",
            started_at=started_at,
            container_id=container_id,
            waiting_reason="",
            waiting_message="",
            terminated=None,
            started=False,
            ready=False,
        )

    def exited(self, terminated: Terminated) -> ContainerRecord:
        return dataclasses.replace(
            self, state="terminated", terminated=terminated, started=False, ready=False
        )

    def restarting(self, reason: str, message: str) -> ContainerRecord:
        """Terminated → waiting for a restart; the termination moves to lastState."""
        return dataclasses.replace(
            self,
            state="waiting",
            waiting_reason=reason,
            waiting_message=message,
            last_terminated=self.terminated or self.last_terminated,
            terminated=None,
            container_id="",
            started=False,
            ready=False,
        )


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _terminated_status(terminated: Terminated) -> dict[str, Any]:
    status: dict[str, Any] = {
        "exitCode": terminated.exit_code,
        "reason": terminated.reason,
        "finishedAt": format_time(terminated.finished_at),
    }
    if terminated.signal:
        status["signal"] = terminated.signal
    if terminated.message:
        status["message"] = terminated.message
    if terminated.started_at:
        status["startedAt"] = format_time(terminated.started_at)
    if terminated.container_id:
        status["containerID"] = terminated.container_id
    return status


def container_status(record: ContainerRecord) -> dict[str, Any]:
    if record.state == "running":
        state: dict[str, Any] = {"running": {"startedAt": format_time(record.started_at)}}  # type: ignore[arg-type]
    elif record.state == "terminated" and record.terminated:
        state = {"terminated": _terminated_status(record.terminated)}
    else:
        waiting: dict[str, str] = {"reason": record.waiting_reason}
        if record.waiting_message:
            waiting["message"] = record.waiting_message
        state = {"waiting": waiting}
    status: dict[str, Any] = {
        "name": record.name,
        "image": record.image,
        "imageID": f"local://{record.image}" if record.image else "",
        "started": record.started,
        "ready": record.ready,
        "restartCount": record.restart_count,
        "state": state,
        "lastState": (
            {"terminated": _terminated_status(record.last_terminated)}
            if record.last_terminated
            else {}
        ),
    }
    if record.container_id and record.state != "waiting":
        status["containerID"] = record.container_id
    return status


def _last_exit(record: ContainerRecord) -> Terminated | None:
    """The termination the kubelet's phase logic sees for a container waiting to restart."""
    return record.last_terminated if record.state == "waiting" else None


def compute_phase(
    restart_policy: str,
    init_records: Sequence[ContainerRecord],
    records: Sequence[ContainerRecord],
    pod_is_terminal: bool = False,
) -> str:
    """The kubelet's getPhase over our records (pkg/kubelet/kubelet_pods.go)."""
    pending_init = failed_init = 0
    for record in init_records:
        if record.state == "running":
            pending_init += 1
        elif record.state == "terminated" and record.terminated:
            failed_init += record.terminated.exit_code != 0
        elif (last := _last_exit(record)) is not None:
            failed_init += last.exit_code != 0
        else:
            pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"

    waiting = running = stopped = succeeded = 0
    for record in records:
        if record.state == "running":
            running += 1
        elif record.state == "terminated" and record.terminated:
            stopped += 1
            succeeded += record.terminated.exit_code == 0
        elif (last := _last_exit(record)) is not None:
            stopped += 1
            succeeded += last.exit_code == 0
        else:
            waiting += 1

    if pending_init or waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if pod_is_terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    kind: str,
    is_true: bool,
    previous: Mapping[str, Json],
    now: datetime.datetime,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if is_true else "False"
    before = previous.get(kind)
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        transition = before["lastTransitionTime"]
    else:
        transition = format_time(now)
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastTransitionTime": transition,
    }
    if not is_true and reason:
        condition["reason"] = reason
    if not is_true and message:
        condition["message"] = message
    return condition


def _names(records: Iterable[ContainerRecord]) -> str:
    return "[" + " ".join(r.name for r in records) + "]"


@dataclass(frozen=True)
class PodRuntime:
    """The agent's view of one pod at a moment, the input to status building."""

    pod_ip: str
    host_ip: str
    start_time: datetime.datetime
    init_records: tuple[ContainerRecord, ...]
    records: tuple[ContainerRecord, ...]
    # Deletion finished: every process is gone and nothing will restart.
    terminal: bool = False


def build_pod_status(
    pod: PodView,
    runtime: PodRuntime,
    previous_conditions: Sequence[Json],
    now: datetime.datetime,
) -> dict[str, Any]:
    """The pod's status as the agent would write it. `previous_conditions` are the ones this
    agent last wrote (or observed), so a condition keeps its lastTransitionTime while its
    status holds; conditions of other writers (PodScheduled, DisruptionTarget, readiness
    gates) are carried over from the pod unchanged."""
    phase = compute_phase(
        pod.restart_policy, runtime.init_records, runtime.records, runtime.terminal
    )
    previous = {c["type"]: c for c in previous_conditions if "type" in c}
    completed = phase in ("Succeeded", "Failed")

    incomplete_init = [
        r
        for r in runtime.init_records
        if not (r.state == "terminated" and r.terminated and r.terminated.exit_code == 0)
    ]
    initialized = not incomplete_init or completed
    unready = [r for r in runtime.records if not r.ready]
    foreign = {c["type"]: c for c in pod.conditions if c.get("type") not in AGENT_CONDITION_TYPES}
    gates_unready = [
        gate for gate in pod.readiness_gates if foreign.get(gate, {}).get("status") != "True"
    ]
    containers_ready = not unready and not completed

    if completed:
        reason = "PodCompleted"
        containers_message = ""
    else:
        reason = "ContainersNotReady"
        containers_message = f"containers with unready status: {_names(unready)}"
    ready_reason, ready_message = reason, containers_message
    if containers_ready and gates_unready:
        ready_reason = "ReadinessGatesNotReady"
        ready_message = (
            f"corresponding condition of pod readiness gate {gates_unready[0]!r} "
            "does not exist or is False"
        )

    conditions = [
        *foreign.values(),
        _condition(POD_READY_TO_START_CONTAINERS, not runtime.terminal, previous, now),
        _condition(
            INITIALIZED,
            initialized,
            previous,
            now,
            "ContainersNotInitialized",
            f"containers with incomplete status: {_names(incomplete_init)}",
        ),
        _condition(CONTAINERS_READY, containers_ready, previous, now, reason, containers_message),
        _condition(
            READY,
            containers_ready and not gates_unready,
            previous,
            now,
            ready_reason,
            ready_message,
        ),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": runtime.host_ip,
        "hostIPs": [{"ip": runtime.host_ip}],
        "podIP": runtime.pod_ip,
        "podIPs": [{"ip": runtime.pod_ip}],
        "startTime": format_time(runtime.start_time),
        "containerStatuses": [container_status(r) for r in runtime.records],
    }
    if runtime.init_records:
        status["initContainerStatuses"] = [container_status(r) for r in runtime.init_records]
    return status


# ---- recovery after an agent restart ----------------------------------------------------


def _terminated_from_status(raw: Json | None) -> Terminated | None:
    if not raw:
        return None
    finished = parse_time(raw.get("finishedAt")) or datetime.datetime.now(datetime.UTC)
    return Terminated(
        exit_code=int(raw.get("exitCode", 0)),
        reason=raw.get("reason", ""),
        finished_at=finished,
        started_at=parse_time(raw.get("startedAt")),
        signal=raw.get("signal"),
        message=raw.get("message", ""),
        container_id=raw.get("containerID", ""),
    )


LOST_PROCESS_MESSAGE = "the local node agent restarted and lost this container's process"


def recovered_record(
    container: ContainerSpec, reported: Json | None, now: datetime.datetime
) -> ContainerRecord:
    """A record rebuilt from the status a previous agent wrote. A container it reported as
    running had its process killed when this agent started, so it counts as having exited
    137 and is restarted (or not) per the restart policy like any other exit."""
    record = ContainerRecord(name=container.name, image=container.image)
    if not reported:
        return record
    record = dataclasses.replace(
        record,
        restart_count=int(reported.get("restartCount", 0)),
        last_terminated=_terminated_from_status(
            (reported.get("lastState") or {}).get("terminated")
        ),
    )
    state = reported.get("state") or {}
    if "running" in state:
        return record.exited(
            Terminated(
                exit_code=137,
                signal=9,
                reason=REASON_ERROR,
                message=LOST_PROCESS_MESSAGE,
                finished_at=now,
                started_at=parse_time(state["running"].get("startedAt")),
                container_id=reported.get("containerID", ""),
            )
        )
    if "terminated" in state:
        terminated = _terminated_from_status(state["terminated"])
        assert terminated is not None
        return record.exited(terminated)
    waiting = state.get("waiting") or {}
    return record.waiting(
        waiting.get("reason", REASON_CONTAINER_CREATING), waiting.get("message", "")
    )


# ---- pod IPs -----------------------------------------------------------------------------


class PodIpAllocator:
    """Addresses local to this machine under a prefix (loopback, or the stack's pod network
    routed to `lo`), handed out round-robin so an address released by one pod is not given
    to the next pod at once (clients may still hold the old one)."""

    def __init__(self, prefix: str) -> None:
        octets = [int(o) for o in prefix.strip(".").split(".")]
        local = octets[:1] == [127] or octets[:2] in ([198, 18], [198, 19])
        if not 1 <= len(octets) <= 3 or not local or any(not 0 <= o <= 255 for o in octets):
            raise ValueError(
                f"pod IP prefix {prefix!r} must be 1-3 octets under 127. or 198.18.0.0/15"
            )
        self._octets = octets
        free_bits = 8 * (4 - len(octets))
        # Skip .0 and .1 of the range (network, and 127.x.0.1 looks like a host address).
        self._first = 2
        self._last = (1 << free_bits) - 2
        self._next = self._first
        self._held: dict[str, str] = {}

    def _address(self, offset: int) -> str:
        free_octets = 4 - len(self._octets)
        tail = [(offset >> (8 * i)) & 0xFF for i in reversed(range(free_octets))]
        return ".".join(str(o) for o in (*self._octets, *tail))

    def contains(self, address: str) -> bool:
        parts = address.split(".")
        return len(parts) == 4 and [int(p) for p in parts[: len(self._octets)]] == self._octets

    def reserve(self, owner: str, address: str) -> bool:
        """Keep an address a pod already has (agent restart); False if it cannot be kept."""
        if not self.contains(address) or address in self._held.values():
            return self._held.get(owner) == address
        self._held[owner] = address
        return True

    def allocate(self, owner: str) -> str:
        if owner in self._held:
            return self._held[owner]
        in_use = set(self._held.values())
        size = self._last - self._first + 1
        for step in range(size):
            offset = self._first + (self._next - self._first + step) % size
            address = self._address(offset)
            if address not in in_use:
                self._held[owner] = address
                self._next = offset + 1
                return address
        raise RuntimeError("no free pod IP left under the prefix")

    def release(self, owner: str) -> None:
        self._held.pop(owner, None)
