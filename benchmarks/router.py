"""Router overhead: the same backend, the same client, direct and through `mlcycle router`;
then the exactness of a 90/10 split over 10,000 requests.

Latency is wrk's (HTTP/1.1 keep-alive, 8 connections, single-row MLflow `/invocations`
POSTs) against the tiny MLflow/OIP backend of the router's tests (uvicorn with uvloop and
httptools, orjson), which answers in well under a millisecond, so what the router adds
is not hidden behind a model. Both paths run once, one after the other, on one machine.
Beside latency, the CPU time the router and the backend spent per request (from
/proc/<pid>/stat) says what the router costs whatever else loads the machine; a run at
one connection shows the latency a single hop adds without queueing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.router_processes import Backend, start_backend, start_router

from benchmarks.record import record

CONNECTIONS = 8
DURATION_S = 15
WARMUP_S = 3
SPLIT_REQUESTS = 10_000
SPLIT_WEIGHTS = {"stable": 90, "canary": 10}
REQUEST_BODY = '{"inputs": [[5.1, 3.5, 1.4, 0.2]]}'

_WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{REQUEST_BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("the router benchmark needs wrk: apt-get install wrk")
    return found


def _milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(
    wrk: str,
    script: Path,
    url: str,
    duration_s: int,
    connections: int = CONNECTIONS,
    processes: dict[str, int] | None = None,
) -> dict[str, float]:
    """wrk's figures, and the CPU each of `processes` (name: pid) spent per request."""
    cpu_before = {name: _cpu_seconds(pid) for name, pid in (processes or {}).items()}
    output = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"errors under load:\n{output}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    figures = {
        "p50_ms": round(_milliseconds(latency["50"]), 3),
        "p99_ms": round(_milliseconds(latency["99"]), 3),
        "rps": round(rps),
    }
    for name, pid in (processes or {}).items():
        spent = _cpu_seconds(pid) - cpu_before[name]
        figures[f"{name}_cpu_us_per_request"] = round(spent * 1e6 / requests, 1)
    return figures


def _split_error_points(router_port: int) -> tuple[float, dict[str, int]]:
    """Largest distance, in points, between configured and measured shares."""
    import http.client
    import threading

    local = threading.local()

    def one(_: int) -> str:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection("127.0.0.1", router_port)
        connection.request("POST", "/invocations", body=REQUEST_BODY)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        return str(response.getheader("x-served-by"))

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        counts = Counter(pool.map(one, range(SPLIT_REQUESTS)))
    total = sum(SPLIT_WEIGHTS.values())
    error = max(
        abs(100 * counts[name] / SPLIT_REQUESTS - 100 * weight / total)
        for name, weight in SPLIT_WEIGHTS.items()
    )
    return round(error, 3), dict(counts)


def _config(backends: dict[str, Backend], weights: dict[str, int]) -> dict[str, Any]:
    return {
        "service": "bench",
        "backends": {name: {"endpoints": [b.endpoint]} for name, b in backends.items()},
        "weights": weights,
    }


def main() -> None:
    wrk = _wrk()
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-router-") as directory:
        logs = Path(directory)
        script = logs / "post.lua"
        script.write_text(_WRK_SCRIPT)
        backends = {
            "stable": start_backend("stable", logs),
            "canary": start_backend("canary", logs),
        }
        router = start_router(logs, config=_config(backends, {"stable": 1, "canary": 0}))
        try:
            direct_url = f"http://{backends['stable'].endpoint}/invocations"
            routed_url = f"{router.url}/invocations"
            pids = {
                "backend": backends["stable"].process.popen.pid,
                "router": router.process.popen.pid,
            }
            _load(wrk, script, direct_url, WARMUP_S)
            _load(wrk, script, routed_url, WARMUP_S)
            direct = _load(wrk, script, direct_url, DURATION_S, processes=pids)
            routed = _load(wrk, script, routed_url, DURATION_S, processes=pids)
            # One connection: no queueing, the latency one request adds going through.
            direct_single = _load(wrk, script, direct_url, DURATION_S, connections=1)
            routed_single = _load(wrk, script, routed_url, DURATION_S, connections=1)
            router.reconfigure(_config(backends, SPLIT_WEIGHTS))
            split_error, split_counts = _split_error_points(router.port)
        finally:
            router.process.stop()
            for backend in backends.values():
                backend.process.stop()
    results = {
        "direct": direct,
        "router": routed,
        "added_p50_ms": round(routed["p50_ms"] - direct["p50_ms"], 3),
        "added_p99_ms": round(routed["p99_ms"] - direct["p99_ms"], 3),
        "split_max_error_points": split_error,
        "one_connection": {"direct": direct_single, "router": routed_single},
        "split": {"weights": SPLIT_WEIGHTS, "requests": SPLIT_REQUESTS, "counts": split_counts},
        "load": f"wrk -t1 -c{CONNECTIONS} -d{DURATION_S}s, POST /invocations, one row",
        "backend": "tests/dataplane_backend.py (uvicorn, uvloop, httptools, orjson)",
    }
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split()[1]
    path = record(
        "router",
        results,
        {"uvloop": _version("uvloop"), "httptools": _version("httptools"), "wrk": wrk_version},
    )
    print(path.read_text())


def _version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


if __name__ == "__main__":
    sys.exit(main())
