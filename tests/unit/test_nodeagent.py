"""The node agent's pure rules: env resolution, expansion, restarts, phase and status."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from mlcycle.dev.nodeagent import containerstatus, envvars, exits, podspec, podstatus, quantity
from mlcycle.dev.nodeagent.config import AgentConfig
from mlcycle.dev.nodeagent.containerstatus import ContainerRecord, Terminated
from mlcycle.dev.nodeagent.envvars import ContainerConfigError, ContainerCreateError, EnvInputs
from mlcycle.dev.nodeagent.ipam import PodIpAllocator
from mlcycle.dev.nodeagent.nodestatus import desired_node_status
from mlcycle.dev.nodeagent.podstatus import PodRuntime
from mlcycle.dev.nodeagent.probes import ProbeOutcome, ProbeTracker

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=30)


def make_pod(
    *,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    restart_policy: str = "Always",
    status: dict[str, Any] | None = None,
    readiness_gates: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "trainer",
            "namespace": "team-a",
            "uid": "uid-1",
            "resourceVersion": "7",
            "labels": {"app": "mnist"},
            "annotations": {"note": "hello"},
        },
        "spec": {
            "nodeName": "local",
            "serviceAccountName": "runner",
            "restartPolicy": restart_policy,
            "initContainers": init_containers or [],
            "containers": containers or [{"name": "main", "image": "img", "command": ["true"]}],
            "readinessGates": [{"conditionType": g} for g in readiness_gates or []],
        },
        "status": status or {},
    }


def env_inputs(
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> EnvInputs:
    return EnvInputs(
        secrets=secrets or {},
        config_maps=config_maps or {},
        pod_ip="127.77.0.5",
        host_ip="127.0.0.1",
        node_allocatable={"cpu": "8", "memory": "16Gi"},
        service_env=envvars.service_env("127.0.0.1", 6443),
    )


def resolve(container: dict[str, Any], inputs: EnvInputs | None = None) -> dict[str, str]:
    pod = podspec.parse_pod(make_pod(containers=[{"name": "main", **container}]))
    return envvars.resolve_env(pod, pod.containers[0], inputs or env_inputs())


# ---- quantities and expansion -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("128Mi", Decimal(128 * 2**20)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("1.5", Decimal("1.5")),
        (3, Decimal(3)),
    ],
)
def test_parse_quantity(text: str | int, expected: Decimal) -> None:
    assert quantity.parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "--1"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        quantity.parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(VAR_A)", "A"),
        ("___$(VAR_A)___", "___A___"),
        ("$(VAR_A)-$(VAR_B)", "A-B"),
        ("$(UNDEFINED)", "$(UNDEFINED)"),
        ("$$(VAR_A)", "$(VAR_A)"),
        ("$$$(VAR_A)", "$A"),
        ("$$", "$"),
        ("$", "$"),
        ("$(VAR_A", "$(VAR_A"),
        ("$VAR_A", "$VAR_A"),
        ("$()", "$()"),
        ("no refs", "no refs"),
        ("$(EMPTY)x", "x"),
    ],
)
def test_expand_references_follows_kubernetes(text: str, expected: str) -> None:
    assert envvars.expand_references(text, {"VAR_A": "A", "VAR_B": "B", "EMPTY": ""}) == expected


# ---- environment --------------------------------------------------------------------------


def test_literal_values_expand_earlier_variables_and_service_env() -> None:
    env = resolve(
        {
            "env": [
                {"name": "BASE", "value": "/data"},
                {"name": "OUT", "value": "$(BASE)/out"},
                {"name": "API", "value": "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)"},
                {"name": "LATER", "value": "$(DEFINED_BELOW)"},
                {"name": "DEFINED_BELOW", "value": "x"},
            ]
        }
    )
    assert env["OUT"] == "/data/out"
    assert env["API"] == "127.0.0.1:6443"
    assert env["LATER"] == "$(DEFINED_BELOW)"


@pytest.mark.parametrize(
    ("field_path", "expected"),
    [
        ("metadata.name", "trainer"),
        ("metadata.namespace", "team-a"),
        ("metadata.uid", "uid-1"),
        ("metadata.labels['app']", "mnist"),
        ("metadata.annotations['note']", "hello"),
        ("metadata.labels['missing']", ""),
        ("spec.nodeName", "local"),
        ("spec.serviceAccountName", "runner"),
        ("status.podIP", "127.77.0.5"),
        ("status.podIPs", "127.77.0.5"),
        ("status.hostIP", "127.0.0.1"),
        ("status.hostIPs", "127.0.0.1"),
    ],
)
def test_field_refs(field_path: str, expected: str) -> None:
    env = resolve({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": field_path}}}]})
    assert env["V"] == expected


@pytest.mark.parametrize(
    ("resources", "resource", "divisor", "expected"),
    [
        ({"limits": {"cpu": "2"}}, "limits.cpu", None, "2"),
        ({"limits": {"cpu": "250m"}}, "limits.cpu", None, "1"),
        ({"limits": {"cpu": "250m"}}, "limits.cpu", "1m", "250"),
        ({"limits": {"memory": "1Gi"}}, "limits.memory", "1Mi", "1024"),
        ({"requests": {"memory": "64Mi"}}, "requests.memory", None, str(64 * 2**20)),
        ({}, "limits.cpu", None, "8"),  # unset limit: node allocatable
        ({}, "requests.cpu", None, "0"),
    ],
)
def test_resource_field_refs(
    resources: dict[str, Any], resource: str, divisor: str | None, expected: str
) -> None:
    ref: dict[str, Any] = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    env = resolve(
        {"resources": resources, "env": [{"name": "V", "valueFrom": {"resourceFieldRef": ref}}]}
    )
    assert env["V"] == expected


def test_secret_and_config_map_refs() -> None:
    env = resolve(
        {
            "env": [
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "t"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "m"}}},
            ]
        },
        env_inputs(secrets={"creds": {"t": "s3cr3t"}}, config_maps={"cfg": {"m": "fast"}}),
    )
    assert (env["TOKEN"], env["MODE"]) == ("s3cr3t", "fast")


@pytest.mark.parametrize(
    ("ref_kind", "ref", "message"),
    [
        ("secretKeyRef", {"name": "nope", "key": "k"}, 'secret "nope" not found'),
        ("configMapKeyRef", {"name": "nope", "key": "k"}, 'configmap "nope" not found'),
        ("secretKeyRef", {"name": "creds", "key": "other"}, "couldn't find key other in Secret"),
        (
            "configMapKeyRef",
            {"name": "cfg", "key": "other"},
            "couldn't find key other in ConfigMap",
        ),
    ],
)
def test_missing_required_references_are_config_errors(
    ref_kind: str, ref: dict[str, str], message: str
) -> None:
    inputs = env_inputs(secrets={"creds": {"t": "x"}}, config_maps={"cfg": {"m": "y"}})
    with pytest.raises(ContainerConfigError, match=message):
        resolve({"env": [{"name": "V", "valueFrom": {ref_kind: ref}}]}, inputs)


@pytest.mark.parametrize("ref_kind", ["secretKeyRef", "configMapKeyRef"])
@pytest.mark.parametrize("ref_name", ["nope", "present"])
def test_optional_missing_references_are_skipped(ref_kind: str, ref_name: str) -> None:
    inputs = env_inputs(secrets={"present": {}}, config_maps={"present": {}})
    ref = {"name": ref_name, "key": "k", "optional": True}
    env = resolve({"env": [{"name": "V", "valueFrom": {ref_kind: ref}}]}, inputs)
    assert "V" not in env


def test_env_from_prefixes_and_env_overrides() -> None:
    env = resolve(
        {
            "envFrom": [
                {"secretRef": {"name": "creds"}, "prefix": "S_"},
                {"configMapRef": {"name": "cfg"}},
                {"configMapRef": {"name": "absent", "optional": True}},
            ],
            "env": [{"name": "MODE", "value": "override"}],
        },
        env_inputs(secrets={"creds": {"user": "u"}}, config_maps={"cfg": {"MODE": "base"}}),
    )
    assert env["S_user"] == "u"
    assert env["MODE"] == "override"


def test_env_from_missing_required_object_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError, match='configmap "cfg" not found'):
        resolve({"envFrom": [{"configMapRef": {"name": "cfg"}}]})


def test_service_env_is_added_but_never_overrides_the_container() -> None:
    env = resolve({"env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"}]})
    assert env["KUBERNETES_SERVICE_HOST"] == "mine"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"


def test_unsupported_sources_fail_the_container_not_the_parse() -> None:
    with pytest.raises(ContainerCreateError, match="unsupported"):
        resolve({"env": [{"name": "V", "valueFrom": {"fileKeyRef": {"path": "x"}}}]})
    with pytest.raises(ContainerCreateError, match="unsupported fieldRef"):
        resolve({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.x"}}}]})


def test_referenced_objects_lists_what_to_read() -> None:
    pod = podspec.parse_pod(
        make_pod(
            containers=[
                {
                    "name": "main",
                    "envFrom": [{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}],
                    "env": [
                        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "c", "key": "k"}}},
                        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "d", "key": "k"}}},
                    ],
                }
            ]
        )
    )
    secrets, config_maps = envvars.referenced_objects(pod.containers[0])
    assert (set(secrets), set(config_maps)) == ({"a", "c"}, {"b", "d"})


# ---- commands -----------------------------------------------------------------------------


def test_build_argv_expands_command_and_args() -> None:
    pod = podspec.parse_pod(
        make_pod(
            containers=[
                {
                    "name": "main",
                    "command": ["python", "-m", "http.server"],
                    "args": ["--bind", "$(POD_IP)", "$$(NOT_EXPANDED)", "$(UNKNOWN)"],
                }
            ]
        )
    )
    argv = envvars.build_argv(pod.containers[0], {"POD_IP": "127.77.0.9"})
    assert argv == [
        "python",
        "-m",
        "http.server",
        "--bind",
        "127.77.0.9",
        "$(NOT_EXPANDED)",
        "$(UNKNOWN)",
    ]


@pytest.mark.parametrize("container", [{"image": "busybox"}, {"image": "x", "command": []}])
def test_a_container_without_command_cannot_run_locally(container: dict[str, Any]) -> None:
    pod = podspec.parse_pod(make_pod(containers=[{"name": "main", **container}]))
    with pytest.raises(ContainerCreateError, match="has no command"):
        envvars.build_argv(pod.containers[0], {})


# ---- restarts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "exit_code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 0, False),
        ("Never", 137, False),
    ],
)
def test_should_restart(policy: str, exit_code: int, restart: bool) -> None:
    assert exits.should_restart(policy, exit_code) is restart


@pytest.mark.parametrize(
    ("policy", "exit_code", "restart"),
    [("Always", 1, True), ("OnFailure", 1, True), ("Never", 1, False), ("Always", 0, False)],
)
def test_init_containers_retry_until_success_unless_never(
    policy: str, exit_code: int, restart: bool
) -> None:
    assert exits.init_should_restart(policy, exit_code) is restart


@pytest.mark.parametrize(
    ("restarts", "delay"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (100, 30.0)],
)
def test_backoff_doubles_to_a_cap(restarts: int, delay: float) -> None:
    assert exits.restart_backoff_seconds(restarts) == delay


@pytest.mark.parametrize(
    ("returncode", "expected"), [(0, (0, None)), (3, (3, None)), (-9, (137, 9)), (-15, (143, 15))]
)
def test_exit_code_and_signal(returncode: int, expected: tuple[int, int | None]) -> None:
    assert exits.exit_code_and_signal(returncode) == expected


@pytest.mark.parametrize(
    ("message_file", "log", "policy", "exit_code", "expected"),
    [
        (b"done", b"log", "File", 0, "done"),
        (b"", b"last words\n", "File", 1, ""),
        (b"", b"last words\n", "FallbackToLogsOnError", 1, "last words\n"),
        (b"", b"last words\n", "FallbackToLogsOnError", 0, ""),
        (b"written", b"log", "FallbackToLogsOnError", 1, "written"),
        (b"x" * 5000, b"", "File", 0, "x" * 4096),
    ],
)
def test_termination_message(
    message_file: bytes, log: bytes, policy: str, exit_code: int, expected: str
) -> None:
    assert exits.termination_message(message_file, log, policy, exit_code) == expected


def test_log_tail_keeps_at_most_80_lines_and_2048_bytes() -> None:
    many_lines = b"".join(f"line {i}\n".encode() for i in range(200))
    assert exits.log_tail(many_lines).splitlines()[0] == "line 120"
    assert len(exits.log_tail(b"y" * 10_000).encode()) == 2048


# ---- phase and status ---------------------------------------------------------------------


def running(name: str = "main", ready: bool = True) -> ContainerRecord:
    record = ContainerRecord(name=name, image="img").running(T0, "local://42")
    return ContainerRecord(**{**record.__dict__, "ready": ready, "started": True})


def exited(code: int, name: str = "main") -> ContainerRecord:
    return ContainerRecord(name=name, image="img").exited(
        Terminated(exit_code=code, reason="Completed" if code == 0 else "Error", finished_at=T0)
    )


def backing_off(code: int, name: str = "main") -> ContainerRecord:
    return exited(code, name).restarting(containerstatus.REASON_CRASH_LOOP_BACK_OFF, "back-off")


def waiting(name: str = "main") -> ContainerRecord:
    return ContainerRecord(name=name, image="img")


@pytest.mark.parametrize(
    ("policy", "init", "main", "terminal", "phase"),
    [
        ("Always", [], [waiting()], False, "Pending"),
        ("Always", [], [running()], False, "Running"),
        ("Always", [], [running("a"), exited(0, "b")], False, "Running"),
        ("Never", [], [exited(0)], False, "Succeeded"),
        ("Never", [], [exited(3)], False, "Failed"),
        ("Never", [], [exited(0, "a"), exited(1, "b")], False, "Failed"),
        ("OnFailure", [], [exited(0)], False, "Succeeded"),
        ("OnFailure", [], [backing_off(1)], False, "Running"),
        ("Always", [], [backing_off(0)], False, "Running"),
        ("Always", [], [exited(0)], True, "Succeeded"),
        ("Always", [], [exited(143)], True, "Failed"),
        ("Always", [running("init")], [waiting()], False, "Pending"),
        ("Never", [exited(1, "init")], [waiting()], False, "Failed"),
        ("OnFailure", [backing_off(1, "init")], [waiting()], False, "Pending"),
        ("Never", [exited(0, "init")], [running()], False, "Running"),
    ],
)
def test_compute_phase(
    policy: str,
    init: list[ContainerRecord],
    main: list[ContainerRecord],
    terminal: bool,
    phase: str,
) -> None:
    assert podstatus.compute_phase(policy, init, main, terminal) == phase


def status_for(
    records: list[ContainerRecord],
    init_records: list[ContainerRecord] | None = None,
    previous: list[dict[str, Any]] | None = None,
    pod: dict[str, Any] | None = None,
    now: datetime.datetime = T1,
) -> dict[str, Any]:
    runtime = PodRuntime(
        pod_ip="127.77.0.5",
        host_ip="127.0.0.1",
        start_time=T0,
        init_records=tuple(init_records or ()),
        records=tuple(records),
    )
    view = podspec.parse_pod(pod or make_pod())
    return podstatus.build_pod_status(view, runtime, previous or [], now)


def conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_status_of_a_ready_running_pod() -> None:
    status = status_for([running()])
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.77.0.5"
    assert status["podIPs"] == [{"ip": "127.77.0.5"}]
    assert status["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert status["startTime"] == "2026-01-01T12:00:00Z"
    assert {k: c["status"] for k, c in conditions(status).items()} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    (container,) = status["containerStatuses"]
    assert container["state"] == {"running": {"startedAt": "2026-01-01T12:00:00Z"}}
    assert container["containerID"] == "local://42"
    assert (container["ready"], container["started"], container["restartCount"]) == (
        True,
        True,
        0,
    )
    assert "initContainerStatuses" not in status


def test_unready_container_names_itself_in_the_conditions() -> None:
    ready = conditions(status_for([running("a"), running("b", ready=False)]))["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [b]"


def test_completed_pod_conditions_say_pod_completed() -> None:
    status = status_for([exited(0)], pod=make_pod(restart_policy="Never"))
    assert status["phase"] == "Succeeded"
    assert conditions(status)["Ready"]["reason"] == "PodCompleted"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")


def test_init_containers_gate_initialized() -> None:
    status = status_for([waiting()], init_records=[running("setup")])
    initialized = conditions(status)["Initialized"]
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [setup]"
    assert status["initContainerStatuses"][0]["name"] == "setup"


def test_transition_time_holds_while_status_holds() -> None:
    first = status_for([running()], now=T0)
    again = status_for([running()], previous=first["conditions"], now=T1)
    assert again == first
    flipped = status_for([running(ready=False)], previous=first["conditions"], now=T1)
    assert conditions(flipped)["Ready"]["lastTransitionTime"] == "2026-01-01T12:00:30Z"
    assert conditions(flipped)["Initialized"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_other_writers_conditions_are_kept_and_readiness_gates_honoured() -> None:
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "x"}
    pod = make_pod(readiness_gates=["example.com/lb"], status={"conditions": [scheduled]})
    status = status_for([running()], pod=pod)
    assert conditions(status)["PodScheduled"] == scheduled
    assert conditions(status)["ContainersReady"]["status"] == "True"
    assert conditions(status)["Ready"]["reason"] == "ReadinessGatesNotReady"

    gate = {"type": "example.com/lb", "status": "True"}
    pod = make_pod(readiness_gates=["example.com/lb"], status={"conditions": [scheduled, gate]})
    assert conditions(status_for([running()], pod=pod))["Ready"]["status"] == "True"


def test_crash_loop_status_shows_waiting_with_last_state() -> None:
    record = exited(1).restarting(containerstatus.REASON_CRASH_LOOP_BACK_OFF, "back-off 2s")
    status = containerstatus.container_status(record)
    assert status["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2s"}}
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert "containerID" not in status


def test_signal_and_message_appear_in_terminated_state() -> None:
    record = ContainerRecord(name="main", image="img").exited(
        Terminated(exit_code=137, signal=9, reason="OOMKilled", message="oom", finished_at=T0)
    )
    terminated = containerstatus.container_status(record)["state"]["terminated"]
    assert terminated == {
        "exitCode": 137,
        "signal": 9,
        "reason": "OOMKilled",
        "message": "oom",
        "finishedAt": "2026-01-01T12:00:00Z",
    }


# ---- recovery after an agent restart ------------------------------------------------------


def test_a_container_reported_running_is_recovered_as_lost() -> None:
    spec = podspec.parse_container({"name": "main", "image": "img", "command": ["x"]})
    reported = {
        "name": "main",
        "restartCount": 2,
        "containerID": "local://9",
        "state": {"running": {"startedAt": "2026-01-01T11:00:00Z"}},
    }
    record = containerstatus.recovered_record(spec, reported, T1)
    assert record.state == "terminated"
    assert record.restart_count == 2
    assert record.terminated is not None
    assert record.terminated.exit_code == 137
    assert record.terminated.message == containerstatus.LOST_PROCESS_MESSAGE


def test_a_terminated_container_is_recovered_as_it_was() -> None:
    spec = podspec.parse_container({"name": "main", "image": "img", "command": ["x"]})
    reported = {
        "name": "main",
        "restartCount": 0,
        "state": {
            "terminated": {"exitCode": 3, "reason": "Error", "finishedAt": "2026-01-01T11:00:00Z"}
        },
    }
    record = containerstatus.recovered_record(spec, reported, T1)
    assert record.terminated is not None
    assert (record.terminated.exit_code, record.terminated.reason) == (3, "Error")


# ---- pod IPs ------------------------------------------------------------------------------


def test_pod_ips_are_distinct_and_not_reused_at_once() -> None:
    allocator = PodIpAllocator("127.77")
    first = allocator.allocate("a")
    second = allocator.allocate("b")
    assert (first, second) == ("127.77.0.2", "127.77.0.3")
    assert allocator.allocate("a") == first
    allocator.release("a")
    assert allocator.allocate("c") == "127.77.0.4"


def test_pod_ips_wrap_around_past_held_addresses() -> None:
    allocator = PodIpAllocator("127.77.3")
    owners = [f"p{i}" for i in range(253)]  # .2 … .254
    addresses = {allocator.allocate(owner) for owner in owners}
    assert len(addresses) == 253
    with pytest.raises(RuntimeError, match="no free pod IP"):
        allocator.allocate("one-too-many")
    allocator.release("p10")
    assert allocator.allocate("again") == "127.77.3.12"


def test_reserve_keeps_a_restarted_pods_address() -> None:
    allocator = PodIpAllocator("127.77")
    assert allocator.reserve("a", "127.77.0.9")
    assert not allocator.reserve("b", "127.77.0.9")
    assert not allocator.reserve("c", "10.0.0.1")
    assert allocator.allocate("d") != "127.77.0.9"


@pytest.mark.parametrize("prefix", ["10.1", "127.1.2.3", "127.300", "198.20.1", "198"])
def test_pod_ip_prefix_must_be_local(prefix: str) -> None:
    with pytest.raises(ValueError, match="pod IP prefix"):
        PodIpAllocator(prefix)


@pytest.mark.parametrize(
    ("prefix", "first"), [("198.18.7", "198.18.7.2"), ("198.19", "198.19.0.2")]
)
def test_pod_ips_from_the_local_pod_network(prefix: str, first: str) -> None:
    assert PodIpAllocator(prefix).allocate("a") == first


# ---- probes -------------------------------------------------------------------------------


def test_probe_parsing_defaults_and_named_ports() -> None:
    spec = podspec.parse_container(
        {
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 3},
            "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30},
        }
    )
    assert spec.named_ports == {"http": 8080}
    assert spec.readiness_probe is not None
    assert (spec.readiness_probe.kind, spec.readiness_probe.path) == ("httpGet", "/")
    assert spec.readiness_probe.period_seconds == 10
    assert spec.liveness_probe is not None
    assert spec.liveness_probe.period_seconds == 3
    assert spec.startup_probe is not None
    assert spec.startup_probe.failure_threshold == 30


@pytest.mark.parametrize(
    ("initial", "results", "expected"),
    [
        (False, [True], True),
        (False, [False, False, False], False),
        (True, [False, False], True),  # below the failure threshold of 3
        (True, [False, False, False], False),
        (None, [False], None),
        (None, [False, False, False], False),
        (True, [False, False, True, False, False], True),  # a success resets the count
    ],
)
def test_probe_thresholds(initial: bool | None, results: list[bool], expected: bool | None) -> None:
    probe = podspec.ProbeSpec(kind="tcpSocket", failure_threshold=3, success_threshold=1)
    tracker = ProbeTracker(probe, initial)
    for result in results:
        tracker.record(ProbeOutcome(result))
    assert tracker.passing is expected


def test_success_threshold_needs_consecutive_successes() -> None:
    tracker = ProbeTracker(podspec.ProbeSpec(kind="tcpSocket", success_threshold=2), False)
    assert tracker.record(ProbeOutcome(True)) is False
    assert tracker.record(ProbeOutcome(True)) is True


# ---- the node -----------------------------------------------------------------------------


def test_node_status_nulls_capacity_it_no_longer_has(tmp_path: Any) -> None:
    config = AgentConfig(
        node_name="local",
        state_dir=tmp_path,
        capacity={"cpu": "4", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"},
        pod_ip_prefix="127.77",
        apiserver_host="127.0.0.1",
        apiserver_port=6443,
        work_dir=str(tmp_path),
    )
    previous = {
        "capacity": {"cpu": "2", "example.com/fpga": "1"},
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "then"}],
    }
    status = desired_node_status(config, "v1.36.3", previous, T1)
    assert status["capacity"]["nvidia.com/gpu"] == "2"
    assert status["capacity"]["example.com/fpga"] is None
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert ready["lastTransitionTime"] == "then"
    assert ready["lastHeartbeatTime"] == "2026-01-01T12:00:30Z"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.36.3"
