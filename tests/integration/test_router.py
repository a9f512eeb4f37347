"""The router as a real process in front of real backend processes: split, pinning,
mirroring with agreement, live reconfiguration under load, HTTP fidelity, error mapping,
retries, draining; then on the local cluster, backends discovered from EndpointSlices and
rules from a ConfigMap."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.router_processes import (
    BACKEND_SCRIPT,
    Backend,
    Router,
    start_backend,
    start_router,
    wait_for,
)

pytestmark = pytest.mark.integration

MLFLOW_BODY = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).encode()
OIP_BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [0.0] * 8}]}
).encode()


def _config(backends: dict[str, Backend], weights: dict[str, int], **rest: Any) -> dict[str, Any]:
    return {
        "service": "iris",
        "backends": {
            name: {"endpoints": [backend.endpoint], "version": f"v-{name}"}
            for name, backend in backends.items()
        },
        "weights": weights,
        **rest,
    }


class Client:
    """Keep-alive HTTP/1.1 connections of our own, one per thread."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(
                self.host, self.port, timeout=10
            )
        return connection

    def request(
        self,
        method: str = "POST",
        path: str = "/invocations",
        body: bytes | None = MLFLOW_BODY,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = self._connection()
        try:
            connection.request(
                method,
                path,
                body=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            response = connection.getresponse()
            data = response.read()
        except Exception:
            connection.close()
            self._local.connection = None
            raise
        if response.getheader("connection", "").lower() == "close":
            connection.close()
            self._local.connection = None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def served_by(self, count: int, threads: int = 8, **request: Any) -> Counter[str]:
        """Who answered `count` requests sent over `threads` connections at once."""

        def one(_: int) -> str:
            status, headers, _body = self.request(**request)
            assert status == 200, status
            return headers["x-served-by"]

        with ThreadPoolExecutor(threads) as pool:
            return Counter(pool.map(one, range(count)))


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def backends(logs: Path) -> Iterator[dict[str, Backend]]:
    started = {
        "stable": start_backend("stable", logs, prediction="0"),
        "canary": start_backend("canary", logs, prediction="0"),
        "disagree": start_backend("disagree", logs, prediction="1"),
    }
    yield started
    for backend in started.values():
        backend.process.stop()


@pytest.fixture
def routers(logs: Path) -> Iterator[list[Router]]:
    started: list[Router] = []
    yield started
    for router in started:
        router.process.stop(signal.SIGKILL)


def _router(routers: list[Router], logs: Path, config: dict[str, Any]) -> Router:
    router = start_router(logs, config=config)
    routers.append(router)
    return router


def test_split_is_exact_through_the_router(
    backends: dict[str, Backend], routers: list[Router], logs: Path
) -> None:
    router = _router(routers, logs, _config(backends, {"stable": 90, "canary": 10}))
    counts = Client(router.port).served_by(10_000)
    assert abs(100 * counts["canary"] / 10_000 - 10) <= 1, counts
    assert abs(100 * counts["stable"] / 10_000 - 90) <= 1, counts
    assert set(counts) == {"stable", "canary"}
    metrics = router.metrics
    assert (
        router.metric(
            "mlcycle_router_requests_total", backend="canary", version="v-canary", code="200"
        )
        == counts["canary"]
    )
    assert (
        router.metric("mlcycle_router_request_duration_seconds_count", backend="stable")
        == counts["stable"]
    )
    assert 'service="iris"' in metrics()


def test_a_header_pins_a_version(
    backends: dict[str, Backend], routers: list[Router], logs: Path
) -> None:
    config = _config(
        backends,
        {"stable": 1},
        headerRoutes=[
            {"header": "X-Mlcycle-Version", "value": "canary", "backend": "canary"},
            {"header": "X-Beta", "backend": "canary"},
        ],
    )
    client = Client(_router(routers, logs, config).port)
    assert client.served_by(200) == {"stable": 200}
    assert client.served_by(200, headers={"X-Mlcycle-Version": "canary"}) == {"canary": 200}
    assert client.served_by(200, headers={"x-beta": "yes"}) == {"canary": 200}
    assert client.served_by(200, headers={"X-Mlcycle-Version": "other"}) == {"stable": 200}
    _, headers, _ = client.request(headers={"X-Beta": "1"})
    assert headers["x-mlcycle-backend"] == "canary"


def test_mirroring_measures_agreement_for_both_protocols(
    backends: dict[str, Backend], routers: list[Router], logs: Path
) -> None:
    agreeing = _router(
        routers,
        logs,
        _config(backends, {"stable": 1}, shadow={"backend": "canary", "percent": 100}),
    )
    disagreeing = _router(
        routers,
        logs,
        _config(backends, {"stable": 1}, shadow={"backend": "disagree", "percent": 50}),
    )
    for router in (agreeing, disagreeing):
        client = Client(router.port)
        for path, body in (("/invocations", MLFLOW_BODY), ("/v2/models/iris/infer", OIP_BODY)):
            # Every answer comes from stable: the mirror's is discarded.
            assert client.served_by(200, path=path, body=body) == {"stable": 200}

    def settled(router: Router, backend: str, expected: float) -> bool:
        return router.metric("mlcycle_router_shadow_comparisons_total", backend=backend) == expected

    wait_for("400 comparisons", lambda: settled(agreeing, "canary", 400))
    assert (
        agreeing.metric("mlcycle_router_shadow_requests_total", backend="canary", result="ok")
        == 400
    )
    assert agreeing.metric("mlcycle_router_shadow_agreements_total", backend="canary") == 400
    assert agreeing.metric("mlcycle_router_shadow_agreement_ratio", backend="canary") == 1.0

    wait_for("200 comparisons", lambda: settled(disagreeing, "disagree", 200))
    assert (
        disagreeing.metric("mlcycle_router_shadow_requests_total", backend="disagree", result="ok")
        == 200
    )
    assert disagreeing.metric("mlcycle_router_shadow_agreements_total", backend="disagree") == 0
    assert disagreeing.metric("mlcycle_router_shadow_agreement_ratio", backend="disagree") == 0.0
    # Mirrors are not client requests: only stable's answers are counted as requests.
    assert disagreeing.metric("mlcycle_router_requests_total", backend="disagree") == 0


def test_weights_change_live_under_load_without_errors(
    backends: dict[str, Backend], routers: list[Router], logs: Path
) -> None:
    live = {"stable": backends["stable"], "canary": backends["canary"]}
    router = _router(routers, logs, _config(live, {"stable": 100, "canary": 0}))
    client = Client(router.port)
    results: list[tuple[float, int | str, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status, headers, _ = client.request()
                results.append((time.monotonic(), status, headers.get("x-served-by", "")))
            except Exception as error:
                results.append((time.monotonic(), repr(error), ""))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        router.reconfigure(_config(live, {"stable": 50, "canary": 50}))
        changed_at = time.monotonic()
        time.sleep(1)
        router.reconfigure(_config(live, {"stable": 0, "canary": 100}))
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    errors = [r for r in results if r[1] != 200]
    assert not errors, errors[:5]
    assert len(results) > 300
    before = Counter(by for at, _, by in results if at < changed_at - 0.2)
    assert before == {"stable": before["stable"]}
    last = Counter(by for _, _, by in results[-100:])
    assert last == {"canary": 100}


def test_http_is_forwarded_faithfully(
    backends: dict[str, Backend], routers: list[Router], logs: Path
) -> None:
    router = _router(routers, logs, _config(backends, {"stable": 1}))
    client = Client(router.port)
    status, headers, body = client.request(
        "PUT",
        "/anything/here?a=1&b=two%20words",
        body=b"payload",
        headers={
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped because Connection lists it",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "X-Forwarded-For": "10.1.2.3",
        },
    )
    assert status == 200
    echoed = json.loads(body)
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/anything/here"
    assert echoed["query"] == "a=1&b=two%20words"
    assert echoed["body"] == "payload"
    assert echoed["headers"]["x-custom"] == "kept"
    assert echoed["headers"]["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    for hop in ("x-hop", "keep-alive", "te", "connection"):
        assert hop not in echoed["headers"], hop
    assert headers["x-served-by"] == "stable"
    # The backend's status passes through, counted under its own code.
    assert client.request("GET", "/missing", body=None)[0] == 404
    assert router.metric("mlcycle_router_requests_total", backend="stable", code="404") == 1

    # A large response streams through (past the router's buffering threshold).
    large = b"x" * 3_000_000
    status, headers, body = client.request("POST", "/echo", body=large)
    assert status == 200
    assert json.loads(body)["body"] == large.decode()
    # The backend gave no length, so the router re-frames it as chunks as they come.
    assert headers["transfer-encoding"] == "chunked"

    # A chunked request body arrives whole, with a length.
    connection = http.client.HTTPConnection("127.0.0.1", router.port, timeout=10)
    connection.request(
        "POST", "/echo", body=iter([b"chunk-one,", b"chunk-two"]), encode_chunked=True
    )
    echoed = json.loads(connection.getresponse().read())
    assert echoed["body"] == "chunk-one,chunk-two"
    assert echoed["headers"]["content-length"] == str(len("chunk-one,chunk-two"))
    assert "transfer-encoding" not in echoed["headers"]

    # HEAD: headers only, and the connection stays usable.
    connection.request("HEAD", "/echo")
    head = connection.getresponse()
    assert head.status == 200
    assert head.read() == b""
    connection.request("POST", "/invocations", body=MLFLOW_BODY)
    assert json.loads(connection.getresponse().read()) == {"predictions": [0]}


def test_status_codes_of_the_router_own_making(
    backends: dict[str, Backend], routers: list[Router], logs: Path
) -> None:
    slow = start_backend("slow", logs, delay_ms=3000)
    try:
        closed_port = _closed_port()
        config = {
            "service": "iris",
            "backends": {
                "slow": {"endpoints": [slow.endpoint]},
                "gone": {"endpoints": [f"127.0.0.1:{closed_port}"]},
            },
            "weights": {"slow": 1},
            "headerRoutes": [{"header": "x-gone", "backend": "gone"}],
            "timeouts": {"requestSeconds": 0.5, "connectSeconds": 0.5},
        }
        router = _router(routers, logs, config)
        client = Client(router.port)
        started = time.monotonic()
        assert client.request()[0] == 504
        assert time.monotonic() - started < 2.5
        status, _, body = client.request(headers={"x-gone": "1"})
        assert status == 502
        assert "cannot connect" in json.loads(body)["error"]
        assert router.metric("mlcycle_router_requests_total", backend="slow", code="504") == 1
        assert router.metric("mlcycle_router_requests_total", backend="gone", code="502") == 1
    finally:
        slow.process.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OneAnswerServer:
    """Answers the first request on each connection, then closes the connection as soon
    as a second request arrives on it, without answering: the keep-alive race."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            answered = False
            buffer = b""
            while True:
                data = connection.recv(65536)
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    buffer = buffer[length:]
                    self.requests.append(head.split(b"\r\n")[0])
                    if answered:
                        connection.shutdown(socket.SHUT_RDWR)
                        return
                    connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    answered = True

    def close(self) -> None:
        self.listener.close()


def test_only_idempotent_requests_are_sent_again_after_the_connection_broke(
    routers: list[Router], logs: Path
) -> None:
    server = OneAnswerServer()
    try:
        config = {
            "service": "iris",
            "backends": {"flaky": {"endpoints": [f"127.0.0.1:{server.port}"]}},
            "weights": {"flaky": 1},
        }
        client = Client(_router(routers, logs, config).port)
        assert client.request("POST", "/invocations")[0] == 200
        # The pooled connection is reused; the backend drops it unanswered.
        assert client.request("POST", "/invocations")[0] == 502
        assert [r.split()[0] for r in server.requests] == [b"POST", b"POST"]
        assert client.request("GET", "/first", body=None)[0] == 200
        # A GET may go again on a fresh connection, and succeeds there.
        assert client.request("GET", "/second", body=None)[0] == 200
        assert [r.split()[1] for r in server.requests[2:]] == [b"/first", b"/second", b"/second"]
    finally:
        server.close()


def test_sigterm_drains_requests_in_flight(routers: list[Router], logs: Path) -> None:
    slow = start_backend("slow", logs, delay_ms=1500)
    try:
        router = _router(
            routers,
            logs,
            {
                "service": "iris",
                "backends": {"slow": {"endpoints": [slow.endpoint]}},
                "weights": {"slow": 1},
            },
        )
        outcome: list[int] = []
        request = threading.Thread(target=lambda: outcome.append(Client(router.port).request()[0]))
        request.start()
        time.sleep(0.5)
        router.process.popen.send_signal(signal.SIGTERM)
        request.join(10)
        assert outcome == [200]
        assert router.process.popen.wait(10) == 0
    finally:
        slow.process.stop()


# --- on the local cluster ------------------------------------------------------------
#
# The local stack's pods get loopback addresses (127.x.y.z), which the API server refuses
# in EndpointSlices ("may not be in the loopback range"), so the EndpointSlice controller
# cannot list them. The pods here therefore listen on every address, each on a port of its
# own, and the test keeps one EndpointSlice per pod, exactly as a custom EndpointSlice
# controller would for Services without selectors: the pod's host-reachable address and
# port, `ready` copied from the pod's Ready condition (its readiness probe, run by the node
# agent). The router reads them through the real API server like any other slice.


def _host_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    import fcntl
    import struct

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), siocgifaddr, request)
            except OSError:
                continue
            address = socket.inet_ntoa(answer[20:24])
            if not address.startswith(("127.", "169.254.")):
                return address
    return None


def _backend_pod(name: str, track: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "iris", "track": track}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "model",
                    "image": "ignored",
                    "command": ["python", str(BACKEND_SCRIPT), "--name", "$(POD_NAME)"],
                    "args": ["--host", "0.0.0.0", "--port", str(port)],
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ],
                    "ports": [{"name": "http", "containerPort": port}],
                    "readinessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def _service(track: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"iris-{track}"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def _cluster_config(weights: dict[str, int]) -> dict[str, Any]:
    return {
        "service": "iris",
        "backends": {
            track: {"service": f"iris-{track}", "port": "http", "version": version}
            for track, version in (("stable", "1"), ("canary", "2"))
        },
        "weights": weights,
        "headerRoutes": [{"header": "x-canary", "backend": "canary"}],
    }


def _tracks(served: Counter[str]) -> Counter[str]:
    return Counter(
        {
            track: sum(n for name, n in served.items() if name.startswith(track))
            for track in ("stable", "canary")
        }
    )


class PodSlices:
    """One EndpointSlice per backend pod, following the pod's readiness."""

    def __init__(self, api_client: Any, namespace: str, host_address: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.namespace = namespace
        self.host_address = host_address
        self.ports: dict[str, int] = {}

    def start_pod(self, name: str, track: str) -> None:
        from mlcycle.dev.processes import free_port

        self.ports[name] = free_port()
        self.core.create_namespaced_pod(self.namespace, _backend_pod(name, track, self.ports[name]))

    def pod_ready(self, name: str) -> bool:
        pod = json.loads(
            self.core.read_namespaced_pod(name, self.namespace, _preload_content=False).data
        )
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def publish(self, name: str, track: str, *, ready: bool) -> None:
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/service-name": f"iris-{track}",
                    "endpointslice.kubernetes.io/managed-by": "mlcycle-tests",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": self.ports[name], "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [self.host_address],
                    "conditions": {"ready": ready},
                    "targetRef": {"kind": "Pod", "name": name, "namespace": self.namespace},
                }
            ],
        }
        from kubernetes import client

        try:
            self.discovery.replace_namespaced_endpoint_slice(name, self.namespace, body)
        except client.ApiException as error:
            if error.status != 404:
                raise
            self.discovery.create_namespaced_endpoint_slice(self.namespace, body)

    def add(self, name: str, track: str) -> None:
        """Start a pod, publish it not ready, then ready once its probe passes."""
        self.start_pod(name, track)
        self.publish(name, track, ready=False)
        wait_for(f"pod {name} ready", lambda: self.pod_ready(name), timeout=60, interval=0.25)
        self.publish(name, track, ready=True)

    def remove(self, name: str, track: str) -> None:
        """Terminating first (traffic leaves), then the slice and the pod go."""
        self.publish(name, track, ready=False)
        self.discovery.delete_namespaced_endpoint_slice(name, self.namespace)
        self.core.delete_namespaced_pod(name, self.namespace)


def test_router_follows_endpointslices_and_its_configmap_on_the_cluster(
    stack: Any, kube_client: Any, namespace: str, routers: list[Router], logs: Path
) -> None:
    from kubernetes import client

    host_address = _host_address()
    if host_address is None:
        pytest.skip("this machine has no non-loopback address an EndpointSlice may hold")
    pods = PodSlices(kube_client, namespace, host_address)
    core = pods.core
    for track in ("stable", "canary"):
        core.create_namespaced_service(namespace, _service(track))

    def write_config(document: dict[str, Any] | str) -> None:
        text = document if isinstance(document, str) else json.dumps(document)
        body = {"metadata": {"name": "iris-router"}, "data": {"router.yaml": text}}
        try:
            core.replace_namespaced_config_map("iris-router", namespace, body)
        except client.ApiException as error:
            if error.status != 404:
                raise
            core.create_namespaced_config_map(namespace, body)

    write_config(_cluster_config({"stable": 100, "canary": 0}))
    router = start_router(
        logs,
        extra_args=["--configmap", "iris-router", "--namespace", namespace],
        env={"KUBECONFIG": str(stack.kubeconfig)},
        wait_ready=False,
    )
    routers.append(router)
    wait_for(
        "router up without endpoints",
        lambda: router.metric("mlcycle_router_config_reloads_total") == 1,
    )
    # Nothing to route to yet: the router says so, to probes and to clients.
    assert Client(router.port).request()[0] == 503

    pods.add("stable-0", "stable")
    pods.add("canary-0", "canary")
    wait_for(
        "router sees one endpoint per backend",
        lambda: (
            router.metric("mlcycle_router_backend_endpoints", backend="canary", version="2") == 1
            and router.metric("mlcycle_router_backend_endpoints", backend="stable", version="1")
            == 1
        ),
    )
    client_ = Client(router.port)
    assert client_.served_by(100) == {"stable-0": 100}
    assert client_.served_by(20, headers={"x-canary": "1"}) == {"canary-0": 20}

    # A new weight in the ConfigMap applies live.
    write_config(_cluster_config({"stable": 50, "canary": 50}))
    wait_for("canary in the split", lambda: "canary-0" in client_.served_by(10, threads=1))
    split = _tracks(client_.served_by(1000))
    assert abs(split["canary"] / 10 - 50) <= 1, split

    # A pod added to a backend joins it.
    pods.add("stable-1", "stable")
    wait_for("stable-1 serving", lambda: "stable-1" in client_.served_by(40))
    assert router.metric("mlcycle_router_backend_endpoints", backend="stable") == 2

    # A pod removed leaves; with the canary gone, all traffic goes to stable.
    pods.remove("canary-0", "canary")
    wait_for(
        "canary without endpoints",
        lambda: router.metric("mlcycle_router_backend_endpoints", backend="canary") == 0,
    )
    assert set(client_.served_by(200)) == {"stable-0", "stable-1"}
    assert client_.request(headers={"x-canary": "1"})[0] == 503
    pods.add("canary-1", "canary")
    wait_for("canary-1 serving", lambda: "canary-1" in client_.served_by(20))

    # A broken configuration is refused; routing continues on the last good one.
    write_config("weights: [not, a, config]")
    wait_for(
        "invalid configuration counted",
        lambda: router.metric("mlcycle_router_config_reloads_total", result="invalid") == 1,
    )
    assert _tracks(client_.served_by(100)) == {"stable": 50, "canary": 50}
