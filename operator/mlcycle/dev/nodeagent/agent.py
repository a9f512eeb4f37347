"""The node agent's I/O: register the Node, keep its lease, watch its pods and run each one.

Threads, not asyncio: process supervision is blocking by nature (Popen, /proc, probes), and
PR_SET_PDEATHSIG ties a child's life to the thread that forked it, which a long-lived
thread per pod gives naturally. One thread keeps the lease, one watches pods, one
`PodWorker` per pod starts and supervises its containers and writes its status.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from mlcycle.dev.nodeagent import podspec
from mlcycle.dev.nodeagent.podspec import (
    ContainerConfigError,
    ContainerCreateError,
    ContainerRecord,
    ContainerSpec,
    PodView,
    Terminated,
)
from mlcycle.dev.nodeagent.probes import ProbeLoop, ProbeOutcome, check_once
from mlcycle.dev.nodeagent.process import (
    group_alive,
    kill_recorded_groups,
    remove_pid_file,
    rss_by_process_group,
    signal_group,
    start_process,
    write_pid_file,
)

log = logging.getLogger("mlcycle.nodeagent")

HOST_IP = "127.0.0.1"
NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
# The node lifecycle controller trusts the lease; the Node's own heartbeat only needs to
# move now and then so `kubectl describe node` does not look stale.
NODE_STATUS_REFRESH_SECONDS = 60.0
PID_FILE = "pid"
TERMINATION_MESSAGE_FILE = "termination-log"
MERGE_PATCH = "application/merge-patch+json"
ACTIVE_TICK_SECONDS = 0.5
IDLE_TICK_SECONDS = 5.0
CONFIG_RETRY_SECONDS = 2.0
CREATE_RETRY_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 2.0
WATCH_TIMEOUT_SECONDS = 240


def _emit(level: int, message: str, **fields: object) -> None:
    log.log(level, message, extra={"fields": fields})


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _is_older(resource_version: str, than: str) -> bool:
    """Whether a pod seen from the watch is staler than one from a PATCH response; the
    two race. Resource versions are opaque, but etcd's are increasing integers."""
    if resource_version.isdigit() and than.isdigit():
        return int(resource_version) < int(than)
    return False


def _micro_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    state_dir: Path
    capacity: Mapping[str, str]
    pod_ip_prefix: str
    apiserver_host: str
    apiserver_port: int
    work_dir: str
    ca_file: str | None = None
    """The apiserver's CA, for the service-account kubeconfigs of pods."""
    python_bin_dir: str = field(default_factory=lambda: os.path.dirname(sys.executable))

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    def base_process_env(self) -> dict[str, str]:
        """What every container starts from instead of the agent's own environment (which
        holds the kubeconfig path and whatever the developer exported)."""
        path = os.pathsep.join(
            p for p in (self.python_bin_dir, os.environ.get("PATH", "/usr/bin:/bin")) if p
        )
        return {
            "PATH": path,
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }


# ---- the API, as JSON ---------------------------------------------------------------------


class Api:
    """The handful of calls the agent makes, on plain JSON so the pure layer sees the wire
    format (camelCase) and not the client's models."""

    def __init__(self, api_client: Any) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.coordination = k8s.CoordinationV1Api(api_client)
        self.version = k8s.VersionApi(api_client)

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(response.data)
        return result

    def server_version(self) -> str:
        version = str(self.version.get_code().git_version)
        # An apiserver built without the release ldflags reports "v0.0.0-master+$Format:%H$";
        # keep a node's kubeletVersion a parseable semver anyway.
        return version if "$" not in version else "v0.0.0-local"

    def read_node(self, name: str) -> dict[str, Any] | None:
        try:
            return self._json(self.core.read_node(name, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def service_account_token(self, namespace: str, account: str, pod: PodView) -> str | None:
        """A token bound to the pod (TokenRequest, as the kubelet asks for its projected
        volume); None when the service account does not exist (yet)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": podspec.SERVICE_ACCOUNT_TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name,
                    "uid": pod.uid,
                },
            },
        }
        try:
            response = self._json(
                self.core.create_namespaced_service_account_token(
                    account, namespace, body, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(response["status"]["token"])

    def create_node(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(self.core.create_node(body, _preload_content=False))

    def patch_node(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(
            self.core.patch_node(name, body, _content_type=MERGE_PATCH, _preload_content=False)
        )

    def patch_node_status(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._json(
            self.core.patch_node_status(
                name, body, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    def renew_lease(self, node: Mapping[str, Any], now: datetime.datetime) -> None:
        name = node["metadata"]["name"]
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": _micro_time(now),
        }
        try:
            self.coordination.patch_namespaced_lease(
                name, NODE_LEASE_NAMESPACE, {"spec": spec}, _content_type=MERGE_PATCH
            )
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": NODE_LEASE_NAMESPACE,
                    # Garbage-collected with the Node, as the kubelet's lease is.
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {**spec, "acquireTime": _micro_time(now)},
            }
            self.coordination.create_namespaced_lease(NODE_LEASE_NAMESPACE, body)

    def list_pods(self, node_name: str) -> dict[str, Any]:
        return self._json(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node_name}", _preload_content=False
            )
        )

    def watch_pods(self, node_name: str, resource_version: str) -> Iterator[dict[str, Any]]:
        response = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node_name}",
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _preload_content=False,
            # A read timeout past the server's own end of the watch finds dead connections.
            _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30),
        )
        try:
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.close()
            response.release_conn()

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._json(
                self.core.read_namespaced_pod(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_pod_status(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._json(
            self.core.patch_namespaced_pod_status(
                name, namespace, body, _content_type=MERGE_PATCH, _preload_content=False
            )
        )

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's final delete: no grace left, and only this incarnation of the pod."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self._json(
                self.core.read_namespaced_secret(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        # surrogateescape keeps non-UTF-8 bytes intact through to the process environment.
        return {
            key: base64.b64decode(value).decode("utf-8", errors="surrogateescape")
            for key, value in (secret.get("data") or {}).items()
        }

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            config_map = self._json(
                self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(config_map.get("data") or {})


# ---- the Node -----------------------------------------------------------------------------


def node_conditions(
    now: datetime.datetime, previous: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    wanted = [
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ]
    conditions = []
    for kind, status, reason, message in wanted:
        old = before.get(kind, {})
        transition = old.get("lastTransitionTime") if old.get("status") == status else None
        conditions.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": podspec.format_time(now),
                "lastTransitionTime": transition or podspec.format_time(now),
            }
        )
    return conditions


def desired_node_status(
    config: AgentConfig, kubelet_version: str, previous: Mapping[str, Any], now: datetime.datetime
) -> dict[str, Any]:
    """The Node's status; capacity keys the node no longer has are nulled so a merge patch
    removes them (an extended resource dropped between runs)."""
    stale = set(previous.get("capacity") or {}) - set(config.capacity)
    resources: dict[str, str | None] = {**dict.fromkeys(stale), **config.capacity}
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": node_conditions(now, list(previous.get("conditions") or [])),
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "containerRuntimeVersion": "mlcycle-local://0",
            "osImage": "mlcycle local node agent",
            "kernelVersion": os.uname().release,
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def node_labels(node_name: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "mlcycle.dev/local-node-agent": "true",
    }


# ---- memory ---------------------------------------------------------------------------------


class MemorySampler:
    """One /proc scan shared by every pod per interval, however many containers have limits."""

    def __init__(self, interval: float = 0.5) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._taken_at = 0.0
        self._sample: dict[int, int] = {}

    def rss_of_group(self, pgid: int) -> int:
        with self._lock:
            if time.monotonic() - self._taken_at >= self._interval:
                self._sample = rss_by_process_group()
                self._taken_at = time.monotonic()
            return self._sample.get(pgid, 0)


# ---- one pod --------------------------------------------------------------------------------


@dataclass
class ContainerSlot:
    """One container's live state, owned by its pod's worker thread (probe threads only set
    the three flags)."""

    spec: ContainerSpec
    is_init: bool
    record: ContainerRecord
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    started_monotonic: float = 0.0
    next_start_at: float = 0.0
    consecutive_restarts: int = 0
    # Terminated and will not run again.
    final: bool = False
    oom_killed: bool = False
    kill_at: float | None = None
    kill_message: str = ""
    probes: list[ProbeLoop] = field(default_factory=list)
    startup_passed: bool = False
    readiness_passed: bool = False
    liveness_failed: str = ""

    @property
    def succeeded(self) -> bool:
        terminated = self.record.terminated
        return (
            self.record.state == "terminated"
            and terminated is not None
            and terminated.exit_code == 0
        )


class PodWorker(threading.Thread):
    def __init__(self, agent: NodeAgent, raw_pod: Mapping[str, Any], pod_ip: str) -> None:
        pod = podspec.parse_pod(raw_pod)
        super().__init__(name=f"pod-{pod.namespace}/{pod.name}", daemon=True)
        self.agent = agent
        self.uid = pod.uid
        self.pod_ip = pod_ip
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._vanished = False
        self._shutting_down = False
        self._terminating = False
        self._terminal = False
        self.finished = threading.Event()
        self._last_status: dict[str, Any] | None = None
        self._last_conditions: list[Mapping[str, Any]] | None = None
        self.start_time = podspec.parse_time(pod.start_time) or _utcnow()
        self.directory = agent.config.pods_dir / f"{pod.namespace}_{pod.name}_{pod.uid}"
        now = _utcnow()
        init_reported = {s.get("name"): s for s in pod.init_container_statuses}
        reported = {s.get("name"): s for s in pod.container_statuses}
        self.init_slots = [
            ContainerSlot(
                spec=spec,
                is_init=True,
                record=podspec.recovered_record(spec, init_reported.get(spec.name), now),
                directory=self.directory / spec.name,
            )
            for spec in pod.init_containers
        ]
        self.slots = [
            ContainerSlot(
                spec=spec,
                is_init=False,
                record=podspec.recovered_record(spec, reported.get(spec.name), now),
                directory=self.directory / spec.name,
            )
            for spec in pod.containers
        ]
        if pod.init_containers and not all(s.succeeded for s in self.init_slots):
            for slot in self.slots:
                if slot.record.state == "waiting" and not slot.record.last_terminated:
                    slot.record = slot.record.waiting(podspec.REASON_POD_INITIALIZING)
        # A pod that ended under a previous agent stays ended; others resume, and containers
        # the previous agent saw exit (or lost) go through the restart policy again.
        self._pod_finished = pod.is_terminal
        for slot in (*self.init_slots, *self.slots):
            if slot.record.state == "terminated":
                self._decide_after_exit(slot, time.monotonic())

    # -- called from other threads --

    def observe(self, raw_pod: Mapping[str, Any]) -> None:
        pod = podspec.parse_pod(raw_pod)
        with self._lock:
            if not _is_older(pod.resource_version, self._pod.resource_version):
                self._pod = pod
        self._wake.set()

    def vanish(self) -> None:
        self._vanished = True
        self._wake.set()

    def shutdown(self) -> None:
        self._shutting_down = True
        self._wake.set()

    def process_groups(self) -> list[int]:
        return [s.process.pid for s in (*self.init_slots, *self.slots) if s.process]

    # -- the worker thread --

    @property
    def pod(self) -> PodView:
        with self._lock:
            return self._pod

    def _fields(self, slot: ContainerSlot | None = None, **extra: object) -> dict[str, object]:
        pod = self.pod
        fields: dict[str, object] = {"namespace": pod.namespace, "pod": pod.name, "uid": pod.uid}
        if slot is not None:
            fields["container"] = slot.spec.name
        return {**fields, **extra}

    def run(self) -> None:
        _emit(logging.INFO, "pod accepted", **self._fields(pod_ip=self.pod_ip))
        try:
            while True:
                if self._vanished or self._shutting_down:
                    self._stop_everything(
                        grace=SHUTDOWN_GRACE_SECONDS if self._shutting_down else 0.0
                    )
                    return
                try:
                    self._tick()
                except Exception:
                    log.exception("pod tick failed", extra={"fields": self._fields()})
                if self.finished.is_set():
                    # Deletion done; only the watch's DELETED (or a relist) remains.
                    self._wake.wait()
                    self._wake.clear()
                    continue
                self._wake.wait(ACTIVE_TICK_SECONDS if self._active() else IDLE_TICK_SECONDS)
                self._wake.clear()
        finally:
            self.finished.set()

    def _all_slots(self) -> list[ContainerSlot]:
        return [*self.init_slots, *self.slots]

    def _active(self) -> bool:
        return self._terminating or any(
            s.process is not None or (not s.final and s.record.state != "terminated")
            for s in self._all_slots()
        )

    def _tick(self) -> None:
        pod = self.pod
        now = time.monotonic()
        for slot in self._all_slots():
            if slot.process is not None and slot.process.poll() is not None:
                self._on_exit(slot)
            if slot.process is not None and slot.kill_at is not None and now >= slot.kill_at:
                signal_group(slot.process.pid, signal.SIGKILL)

        if pod.deletion_timestamp and not self._terminating:
            self._begin_termination(pod)
        if self._terminating:
            if not any(s.process for s in self._all_slots()):
                self._terminal = True
                self._write_status()
                self.agent.api.delete_pod_now(pod.namespace, pod.name, pod.uid)
                _emit(logging.INFO, "pod deleted", **self._fields())
                self.finished.set()
                return
            self._write_status()
            return

        self._enforce_memory_limits()
        self._restart_failed_liveness(now)
        if not self._pod_finished:
            self._start_due_containers(now)
        for slot in self._all_slots():
            self._refresh_probe_flags(slot)
        status = self._write_status()
        if status is not None and status["phase"] in ("Succeeded", "Failed"):
            self._pod_finished = True

    # -- starting --

    def _start_due_containers(self, now: float) -> None:
        for slot in self.init_slots:
            if slot.succeeded:
                continue
            if slot.final:
                return  # a failed init container of a pod that never restarts
            if slot.process is None and now >= slot.next_start_at:
                self._start(slot, now)
            return  # init containers run one at a time, in order
        for slot in self.slots:
            due = now >= slot.next_start_at and not slot.final
            if due and slot.record.state == "waiting" and slot.process is None:
                self._start(slot, now)

    def _service_account_env(self, pod: PodView) -> dict[str, str]:
        """`KUBECONFIG` naming the pod's service-account kubeconfig, written on first use."""
        if not podspec.wants_service_account_token(pod):
            return {}
        path = self.directory / "serviceaccount.kubeconfig"
        if not path.exists():
            token = self.agent.api.service_account_token(
                pod.namespace, pod.service_account_name, pod
            )
            if token is None:
                raise ContainerConfigError(f'serviceaccount "{pod.service_account_name}" not found')
            config = self.agent.config
            kubeconfig = podspec.service_account_kubeconfig(
                config.apiserver_host, config.apiserver_port, config.ca_file, pod.namespace, token
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(kubeconfig, handle)
        return {"KUBECONFIG": str(path)}

    def _resolve_env(self, pod: PodView, spec: ContainerSpec) -> dict[str, str]:
        secret_names, config_map_names = podspec.referenced_objects(spec)
        secrets = {
            name: data
            for name in secret_names
            if (data := self.agent.api.secret_data(pod.namespace, name)) is not None
        }
        config_maps = {
            name: data
            for name in config_map_names
            if (data := self.agent.api.config_map_data(pod.namespace, name)) is not None
        }
        inputs = podspec.EnvInputs(
            secrets=secrets,
            config_maps=config_maps,
            pod_ip=self.pod_ip,
            host_ip=HOST_IP,
            node_allocatable=self.agent.config.capacity,
            service_env={**self.agent.service_env, **self._service_account_env(pod)},
        )
        return {"HOSTNAME": podspec.pod_hostname(pod), **podspec.resolve_env(pod, spec, inputs)}

    def _start(self, slot: ContainerSlot, now: float) -> None:
        pod = self.pod
        try:
            env = self._resolve_env(pod, slot.spec)
            argv = podspec.build_argv(slot.spec, env)
        except ContainerConfigError as error:
            slot.record = slot.record.waiting(
                podspec.REASON_CREATE_CONTAINER_CONFIG_ERROR, str(error)
            )
            slot.next_start_at = now + CONFIG_RETRY_SECONDS
            return
        except (ContainerCreateError, ValueError) as error:
            slot.record = slot.record.waiting(podspec.REASON_CREATE_CONTAINER_ERROR, str(error))
            slot.next_start_at = now + CREATE_RETRY_SECONDS
            return

        has_run_before = slot.record.terminated is not None or slot.record.last_terminated
        restart_count = slot.record.restart_count + (1 if has_run_before else 0)
        slot.record = dataclasses.replace(slot.record, restart_count=restart_count)
        message_file = slot.directory / TERMINATION_MESSAGE_FILE
        remove_pid_file(message_file)
        slot.env = {**env, podspec.TERMINATION_MESSAGE_ENV: str(message_file)}
        process_env = {**self.agent.config.base_process_env(), **slot.env}
        log_path = slot.directory / f"{restart_count}.log"
        started_at = _utcnow()
        slot.oom_killed = False
        slot.kill_at = None
        slot.kill_message = ""
        slot.liveness_failed = ""
        slot.startup_passed = slot.spec.startup_probe is None
        slot.readiness_passed = False
        try:
            process = start_process(
                argv, process_env, slot.spec.working_dir or self.agent.config.work_dir, log_path
            )
        except OSError as error:
            # What containerd reports when the entrypoint cannot be executed.
            slot.record = slot.record.running(started_at, "").exited(
                Terminated(
                    exit_code=128,
                    reason=podspec.REASON_START_ERROR,
                    message=f"failed to start {argv[0]!r}: {error}",
                    started_at=started_at,
                    finished_at=started_at,
                )
            )
            _emit(
                logging.WARNING, "container failed to start", **self._fields(slot, error=str(error))
            )
            self._decide_after_exit(slot, now)
            return
        slot.process = process
        slot.started_monotonic = now
        write_pid_file(slot.directory / PID_FILE, process.pid)
        slot.record = slot.record.running(started_at, f"local://{process.pid}")
        _emit(
            logging.INFO,
            "container started",
            **self._fields(slot, pid=process.pid, restart_count=restart_count, log=str(log_path)),
        )
        self._start_probes(slot)

    # -- probes --

    def _start_probes(self, slot: ContainerSlot) -> None:
        spec = slot.spec
        cwd = spec.working_dir or self.agent.config.work_dir

        def checker(probe: podspec.ProbeSpec) -> Callable[[], ProbeOutcome]:
            env = {**self.agent.config.base_process_env(), **slot.env}
            return lambda: check_once(probe, spec, self.pod_ip, env, cwd)

        def wake_after(
            update: Callable[[bool | None, str], None],
        ) -> Callable[[bool | None, str], None]:
            def on_result(passing: bool | None, message: str) -> None:
                update(passing, message)
                self._wake.set()

            return on_result

        def on_startup(passing: bool | None, message: str) -> None:
            if passing:
                slot.startup_passed = True
            elif passing is False:
                slot.liveness_failed = f"Startup probe failed: {message}"

        def on_readiness(passing: bool | None, _message: str) -> None:
            slot.readiness_passed = bool(passing)

        def on_liveness(passing: bool | None, message: str) -> None:
            if passing is False:
                slot.liveness_failed = f"Liveness probe failed: {message}"

        def started() -> bool:
            return slot.startup_passed

        loops = []
        name = f"{self.name}/{spec.name}"
        if spec.startup_probe:
            loops.append(
                ProbeLoop(
                    f"{name}/startup",
                    spec.startup_probe,
                    checker(spec.startup_probe),
                    wake_after(on_startup),
                    None,
                )
            )
        if spec.readiness_probe:
            loops.append(
                ProbeLoop(
                    f"{name}/readiness",
                    spec.readiness_probe,
                    checker(spec.readiness_probe),
                    wake_after(on_readiness),
                    False,
                    gate=started,
                )
            )
        if spec.liveness_probe:
            loops.append(
                ProbeLoop(
                    f"{name}/liveness",
                    spec.liveness_probe,
                    checker(spec.liveness_probe),
                    wake_after(on_liveness),
                    True,
                    gate=started,
                )
            )
        slot.probes = loops
        for loop in loops:
            loop.start()

    def _stop_probes(self, slot: ContainerSlot) -> None:
        for loop in slot.probes:
            loop.stop()
        slot.probes = []

    def _refresh_probe_flags(self, slot: ContainerSlot) -> None:
        if slot.record.state != "running":
            return
        started = slot.startup_passed
        ready = started and (slot.spec.readiness_probe is None or slot.readiness_passed)
        if slot.is_init:
            ready = False  # init containers never count as ready, as in the kubelet
        if slot.record.started != started or slot.record.ready != ready:
            slot.record = dataclasses.replace(slot.record, started=started, ready=ready)
        # The startup probe is done once it passed.
        if started and slot.spec.startup_probe:
            for loop in slot.probes:
                if loop.name.endswith("/startup"):
                    loop.stop()

    def _restart_failed_liveness(self, now: float) -> None:
        for slot in self._all_slots():
            if slot.process is not None and slot.liveness_failed and slot.kill_at is None:
                _emit(
                    logging.INFO,
                    "killing container",
                    **self._fields(slot, reason=slot.liveness_failed),
                )
                slot.kill_message = slot.liveness_failed
                signal_group(slot.process.pid, signal.SIGTERM)
                slot.kill_at = now + self.pod.grace_period_seconds

    def _enforce_memory_limits(self) -> None:
        # There are no cgroups for local processes, so the limit is enforced by sampling
        # the process group's RSS and killing it like the kernel's OOM killer would.
        for slot in self._all_slots():
            limit = slot.spec.memory_limit_bytes
            if slot.process is None or limit is None or slot.oom_killed:
                continue
            rss = self.agent.memory.rss_of_group(slot.process.pid)
            if rss > limit:
                slot.oom_killed = True
                signal_group(slot.process.pid, signal.SIGKILL)
                _emit(
                    logging.INFO,
                    "container over memory limit",
                    **self._fields(slot, rss=rss, limit=limit),
                )

    # -- exits --

    def _on_exit(self, slot: ContainerSlot) -> None:
        assert slot.process is not None
        returncode = slot.process.returncode
        pid = slot.process.pid
        # Whatever the leader left in its group dies with it, as in a container.
        signal_group(pid, signal.SIGKILL)
        slot.process = None
        self._stop_probes(slot)
        remove_pid_file(slot.directory / PID_FILE)
        exit_code, signum = podspec.exit_code_and_signal(returncode)
        if slot.oom_killed:
            exit_code, signum = 137, None
        message = podspec.termination_message(
            self._read_message_file(slot),
            self._read_log_end(slot),
            slot.spec.termination_message_policy,
            exit_code,
        )
        if slot.kill_message and not message:
            message = slot.kill_message
        terminated = Terminated(
            exit_code=exit_code,
            signal=signum,
            reason=podspec.terminated_reason(exit_code, slot.oom_killed),
            message=message,
            started_at=slot.record.started_at,
            finished_at=_utcnow(),
            container_id=slot.record.container_id,
        )
        slot.record = slot.record.exited(terminated)
        _emit(
            logging.INFO,
            "container exited",
            **self._fields(slot, exit_code=exit_code, reason=terminated.reason),
        )
        if not self._terminating:
            self._decide_after_exit(slot, time.monotonic())

    def _decide_after_exit(self, slot: ContainerSlot, now: float) -> None:
        terminated = slot.record.terminated
        assert terminated is not None
        policy = self.pod.restart_policy
        if self._pod_finished:
            slot.final = True
            return
        if slot.is_init:
            restart = podspec.init_should_restart(policy, terminated.exit_code)
            if terminated.exit_code == 0:
                slot.final = True
                return
        else:
            restart = podspec.should_restart(policy, terminated.exit_code)
        if not restart:
            slot.final = True
            return
        if (
            slot.started_monotonic
            and now - slot.started_monotonic >= podspec.BACKOFF_RESET_AFTER_SECONDS
        ):
            slot.consecutive_restarts = 0
        slot.consecutive_restarts += 1
        delay = podspec.restart_backoff_seconds(slot.consecutive_restarts)
        slot.next_start_at = now + delay
        pod = self.pod
        slot.record = slot.record.restarting(
            podspec.REASON_CRASH_LOOP_BACK_OFF,
            f"back-off {delay:g}s restarting failed container={slot.spec.name} "
            f"pod={pod.name}_{pod.namespace}({pod.uid})",
        )

    def _read_message_file(self, slot: ContainerSlot) -> bytes:
        try:
            with (slot.directory / TERMINATION_MESSAGE_FILE).open("rb") as message_file:
                return message_file.read(podspec.TERMINATION_MESSAGE_MAX_BYTES)
        except OSError:
            return b""

    def _read_log_end(self, slot: ContainerSlot) -> bytes:
        try:
            with (slot.directory / f"{slot.record.restart_count}.log").open("rb") as log_file:
                log_file.seek(0, os.SEEK_END)
                size = log_file.tell()
                log_file.seek(max(0, size - 4 * podspec.LOG_FALLBACK_MAX_BYTES))
                return log_file.read()
        except OSError:
            return b""

    # -- deletion and shutdown --

    def _begin_termination(self, pod: PodView) -> None:
        self._terminating = True
        grace = pod.grace_period_seconds
        _emit(logging.INFO, "pod deletion requested", **self._fields(grace_seconds=grace))
        deadline = time.monotonic() + grace
        for slot in self._all_slots():
            self._stop_probes(slot)
            slot.final = True
            if slot.process is not None:
                signal_group(slot.process.pid, signal.SIGTERM)
                slot.kill_at = deadline
            elif slot.record.state == "waiting":
                # Never ran or waiting for a restart: nothing to stop, but it is over.
                last = slot.record.last_terminated
                if last is not None:
                    slot.record = dataclasses.replace(
                        slot.record, state="terminated", terminated=last
                    )

    def _stop_everything(self, grace: float) -> None:
        running = [s for s in self._all_slots() if s.process is not None]
        for slot in running:
            self._stop_probes(slot)
            assert slot.process is not None
            signal_group(slot.process.pid, signal.SIGTERM if grace else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for slot in running:
            assert slot.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                slot.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            signal_group(slot.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                slot.process.wait(timeout=2)
                remove_pid_file(slot.directory / PID_FILE)
        _emit(logging.INFO, "pod processes stopped", **self._fields(count=len(running)))

    # -- status --

    def _write_status(self) -> dict[str, Any] | None:
        pod = self.pod
        runtime = podspec.PodRuntime(
            pod_ip=self.pod_ip,
            host_ip=HOST_IP,
            start_time=self.start_time,
            init_records=tuple(s.record for s in self.init_slots),
            records=tuple(s.record for s in self.slots),
            terminal=self._terminal,
        )
        previous = self._last_conditions if self._last_conditions is not None else pod.conditions
        status = podspec.build_pod_status(pod, runtime, previous, _utcnow())
        if status == self._last_status:
            return status
        body = {"metadata": {"resourceVersion": pod.resource_version}, "status": status}
        try:
            updated = self.agent.api.patch_pod_status(pod.namespace, pod.name, body)
        except ApiException as error:
            if error.status == 409:
                # Someone else changed the pod since we saw it: look again, retry next tick.
                fresh = self.agent.api.read_pod(pod.namespace, pod.name)
                if fresh is not None:
                    self.observe(fresh)
                return None
            if error.status == 404:
                self.vanish()
                return None
            raise
        self.observe(updated)
        if self._last_status is None or status["phase"] != self._last_status.get("phase"):
            _emit(logging.INFO, "pod phase", **self._fields(phase=status["phase"]))
        self._last_status = status
        self._last_conditions = status["conditions"]
        return status


# ---- the agent ------------------------------------------------------------------------------


class NodeAgent:
    def __init__(self, config: AgentConfig, api: Api) -> None:
        self.config = config
        self.api = api
        self.allocator = podspec.PodIpAllocator(config.pod_ip_prefix)
        self.memory = MemorySampler()
        self.service_env = podspec.service_env(config.apiserver_host, config.apiserver_port)
        self.stopping = threading.Event()
        self._workers: dict[str, PodWorker] = {}
        self._workers_lock = threading.Lock()
        self._node: dict[str, Any] = {}
        self._kubelet_version = ""

    def run(self) -> None:
        """Serve until `stopping` is set, then stop every pod's processes."""
        self.config.pods_dir.mkdir(parents=True, exist_ok=True)
        leftovers = kill_recorded_groups(self.config.pods_dir, PID_FILE)
        if leftovers:
            _emit(logging.INFO, "killed processes left by a previous agent", pids=leftovers)
        self._register_node()
        threads = [
            threading.Thread(target=self._keep_alive, name="heartbeat", daemon=True),
            threading.Thread(target=self._watch_pods, name="pod-watch", daemon=True),
        ]
        for thread in threads:
            thread.start()
        self.stopping.wait()
        self._shutdown()

    # -- node --

    def _register_node(self) -> None:
        while not self.stopping.is_set():
            try:
                self._kubelet_version = self.api.server_version()
                existing = self.api.read_node(self.config.node_name)
                if existing is None:
                    existing = self.api.create_node(
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": {
                                "name": self.config.node_name,
                                "labels": node_labels(self.config.node_name),
                            },
                        }
                    )
                    _emit(logging.INFO, "node registered", node=self.config.node_name)
                else:
                    self.api.patch_node(
                        self.config.node_name,
                        {"metadata": {"labels": node_labels(self.config.node_name)}},
                    )
                self._node = self._patch_node_status(existing)
                self.api.renew_lease(self._node, _utcnow())
                _emit(
                    logging.INFO,
                    "node ready",
                    node=self.config.node_name,
                    capacity=dict(self.config.capacity),
                )
                return
            except Exception as error:  # the apiserver may still be starting
                _emit(logging.WARNING, "node registration failed, retrying", error=str(error))
                self.stopping.wait(2)

    def _patch_node_status(self, node: Mapping[str, Any]) -> dict[str, Any]:
        status = desired_node_status(
            self.config, self._kubelet_version, node.get("status") or {}, _utcnow()
        )
        return self.api.patch_node_status(self.config.node_name, {"status": status})

    def _keep_alive(self) -> None:
        last_status_refresh = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW_SECONDS):
            try:
                if time.monotonic() - last_status_refresh >= NODE_STATUS_REFRESH_SECONDS:
                    current = self.api.read_node(self.config.node_name)
                    if current is None:
                        _emit(logging.WARNING, "node was deleted, registering again")
                        self._register_node()
                        current = self._node
                    self._node = self._patch_node_status(current)
                    last_status_refresh = time.monotonic()
                self.api.renew_lease(self._node, _utcnow())
            except Exception as error:
                _emit(logging.WARNING, "heartbeat failed", error=str(error))

    # -- pods --

    def _watch_pods(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.api.list_pods(self.config.node_name)
                resource_version = listing["metadata"]["resourceVersion"]
                self._sync(listing.get("items") or [])
                while not self.stopping.is_set():
                    for event in self.api.watch_pods(self.config.node_name, resource_version):
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise ApiException(
                                status=obj.get("code", 500), reason=obj.get("message")
                            )
                        resource_version = obj.get("metadata", {}).get(
                            "resourceVersion", resource_version
                        )
                        if kind in ("ADDED", "MODIFIED"):
                            self._on_pod(obj)
                        elif kind == "DELETED":
                            self._on_pod_gone(obj.get("metadata", {}).get("uid", ""))
            except ApiException as error:
                if error.status == 410:
                    _emit(logging.INFO, "pod watch expired, listing again")
                    continue
                _emit(
                    logging.WARNING,
                    "pod watch failed",
                    status=error.status,
                    error=str(error.reason),
                )
                self.stopping.wait(2)
            except Exception as error:
                _emit(logging.WARNING, "pod watch failed", error=str(error))
                self.stopping.wait(2)

    def _sync(self, pods: list[dict[str, Any]]) -> None:
        listed = {p["metadata"]["uid"] for p in pods}
        with self._workers_lock:
            gone = [uid for uid in self._workers if uid not in listed]
        for uid in gone:
            self._on_pod_gone(uid)
        for pod in pods:
            self._on_pod(pod)

    def _on_pod(self, raw_pod: Mapping[str, Any]) -> None:
        metadata = raw_pod.get("metadata") or {}
        uid = metadata.get("uid", "")
        if (raw_pod.get("spec") or {}).get("nodeName") != self.config.node_name:
            return
        with self._workers_lock:
            worker = self._workers.get(uid)
            if worker is None:
                if self.stopping.is_set():
                    return
                reported_ip = (raw_pod.get("status") or {}).get("podIP", "")
                if not (reported_ip and self.allocator.reserve(uid, reported_ip)):
                    reported_ip = self.allocator.allocate(uid)
                worker = PodWorker(self, raw_pod, reported_ip)
                self._workers[uid] = worker
                worker.start()
                return
        worker.observe(raw_pod)

    def _on_pod_gone(self, uid: str) -> None:
        with self._workers_lock:
            worker = self._workers.pop(uid, None)
            self.allocator.release(uid)
        if worker is not None:
            worker.vanish()

    def _shutdown(self) -> None:
        with self._workers_lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.shutdown()
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS + 5
        for worker in workers:
            worker.finished.wait(max(0.0, deadline - time.monotonic()))
        # Belt and braces for a worker stuck in an API call: its process groups still go.
        for worker in workers:
            for pgid in worker.process_groups():
                if group_alive(pgid):
                    signal_group(pgid, signal.SIGKILL)
        _emit(logging.INFO, "node agent stopped", pods=len(workers))
