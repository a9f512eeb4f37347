"""Readiness, liveness and startup probes: one check, and the thresholds around it."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mlcycle.dev.nodeagent.envvars import expand_references
from mlcycle.dev.nodeagent.podspec import ContainerSpec, ProbeSpec
from mlcycle.dev.nodeagent.process import run_with_timeout


@dataclass(frozen=True)
class ProbeOutcome:
    success: bool
    message: str = ""


def resolve_port(port: int | str, container: ContainerSpec) -> int:
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    if port in container.named_ports:
        return container.named_ports[port]
    raise ValueError(f"container {container.name!r} has no port named {port!r}")


def check_once(
    probe: ProbeSpec,
    container: ContainerSpec,
    pod_ip: str,
    env: Mapping[str, str],
    cwd: str,
) -> ProbeOutcome:
    """Run one probe like the kubelet's prober: HTTP 200-399 passes, a TCP connect passes,
    an exec probe passes on exit 0; a timeout fails."""
    try:
        if probe.kind == "httpGet":
            return _http_get(probe, resolve_port(probe.port, container), probe.host or pod_ip)
        if probe.kind == "tcpSocket":
            port = resolve_port(probe.port, container)
            with socket.create_connection((probe.host or pod_ip, port), probe.timeout_seconds):
                return ProbeOutcome(True)
        if probe.kind == "exec":
            argv = [expand_references(part, env) for part in probe.command]
            code, output = run_with_timeout(argv, env, cwd, probe.timeout_seconds)
            if code is None:
                return ProbeOutcome(False, f"command timed out after {probe.timeout_seconds}s")
            tail = output[-1024:].decode("utf-8", errors="replace").strip()
            return ProbeOutcome(code == 0, f"exit code {code}" + (f": {tail}" if tail else ""))
        return ProbeOutcome(False, f"{probe.kind} probes are not supported by the local agent")
    except (OSError, ValueError, http.client.HTTPException) as error:
        return ProbeOutcome(False, f"{type(error).__name__}: {error}")


def _http_get(probe: ProbeSpec, port: int, host: str) -> ProbeOutcome:
    connection: http.client.HTTPConnection
    if probe.scheme.upper() == "HTTPS":
        # The kubelet does not verify probe certificates either.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(
            host, port, timeout=probe.timeout_seconds, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=probe.timeout_seconds)
    try:
        headers = {"User-Agent": "kube-probe/mlcycle", **dict(probe.http_headers)}
        connection.request("GET", probe.path, headers=headers)
        response = connection.getresponse()
        response.read(10 * 1024)
        success = 200 <= response.status < 400
        return ProbeOutcome(success, f"HTTP probe returned {response.status}")
    finally:
        connection.close()


class ProbeTracker:
    """Consecutive results against success/failure thresholds (pure; fed results in order).

    `passing` is None until a threshold is first reached when the probe starts undecided
    (startup probes); readiness starts failing and liveness passing, as in the kubelet.
    """

    def __init__(self, probe: ProbeSpec, initially_passing: bool | None) -> None:
        self._probe = probe
        self.passing = initially_passing
        self._successes = 0
        self._failures = 0
        self.last_message = ""

    def record(self, outcome: ProbeOutcome) -> bool | None:
        """Take one result; returns the thresholded state."""
        self.last_message = outcome.message
        if outcome.success:
            self._successes += 1
            self._failures = 0
            if self._successes >= max(1, self._probe.success_threshold):
                self.passing = True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= max(1, self._probe.failure_threshold):
                self.passing = False
        return self.passing


class ProbeLoop(threading.Thread):
    """Runs one probe of one running container on its period until stopped.

    `on_result` gets each thresholded state; `gate`, when given, must hold before probing
    (liveness and readiness wait for a startup probe to pass, as in the kubelet).
    """

    def __init__(
        self,
        name: str,
        probe: ProbeSpec,
        check: Callable[[], ProbeOutcome],
        on_result: Callable[[bool | None, str], None],
        initially_passing: bool | None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._probe = probe
        self._check = check
        self._on_result = on_result
        self._gate = gate
        self._tracker = ProbeTracker(probe, initially_passing)
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        while self._gate is not None and not self._gate():
            if self.stopped.wait(0.2):
                return
        if self.stopped.wait(self._probe.initial_delay_seconds):
            return
        period = max(self._probe.period_seconds, 0.1)
        while not self.stopped.is_set():
            began = time.monotonic()
            outcome = self._check()
            if self.stopped.is_set():
                return
            passing = self._tracker.record(outcome)
            self._on_result(passing, self._tracker.last_message)
            self.stopped.wait(max(0.0, period - (time.monotonic() - began)))
