"""Model servers side by side: one scikit-learn iris model, single-row requests.

Servers, one at a time on loopback, each given the same model directory:
- `mlcycle`: `mlcycle serve` (native sklearn flavor, signature validation and metrics on; gRPC
  on, as by default, on a free port)
- `mlcycle_pyfunc`: the same with `--pyfunc` (MLflow's pyfunc path through pandas)
- `bare`: benchmarks/bare_server.py, uvicorn + orjson + the model's predict, nothing else
- `mlflow_serve`: `mlflow models serve --env-manager local` from this virtualenv
- `mlserver`: MLServer with its MLflow runtime, from a virtualenv of its own under
  $MLCYCLE_CACHE/bench-venvs (pinned below; this project's lock file is not touched)

wrk (Debian's package; installed with apt-get when missing and we are root) sends
dataframe_split bodies to /invocations on every server (MLServer's MLflow runtime serves
that route too), 8 connections (2 threads), a warm-up then a measured run. The `_64` entries
repeat with 64 connections: the load at which micro-batching pays off; `mlcycle_unbatched_64`
is mlcycle with --max-batch-size 1 for comparison. `mlcycle_v2` is the same load over the
Open Inference Protocol (`POST /v2/models/iris/infer`, the row as JSON).

The `mlcycle` server is also measured over the Open Inference Protocol's gRPC service
(KServe's GRPCInferenceService/ModelInfer):
- `mlcycle_grpc`: `mlcycle_v2` over gRPC. ghz (pinned below, built with `go install` into
  $MLCYCLE_CACHE/bin on first use) sends `mlcycle_v2`'s request as a ModelInferRequest (the
  row in fp64_contents) as wrk sends its body: 8 connections with one caller each, closed
  loop, 2 OS threads, the same warm-up and measured run. ghz's Go client spends more CPU per
  call than wrk, on the cores the server uses too.
- `tritonclient_grpc`, `tritonclient_http`: the same model called with Triton's Python client
  library over each protocol, as an application would: 8 threads, each with a client (and a
  connection) of its own, calling `infer` with the row in a closed loop, with tritonclient's
  defaults (raw_input_contents over gRPC; the binary tensor extension over HTTP, for the
  output too). The threads run in benchmarks/triton_load.py processes apart from the
  server, one per CPU so that no single GIL caps the load, started together; a warm-up, then
  the measured window. Latency is per call as the application sees it: building the input,
  tritonclient's encoding and decoding, the round trip and the server's work; rps counts the
  calls started in the window. The clients share the CPUs with the server (the CPU they used
  is printed): these figures compare the two protocols end to end, client included, where
  `mlcycle_v2` and `mlcycle_grpc` compare what the server does with them.

Trial runs: MLCYCLE_BENCH_WARMUP_SECONDS and MLCYCLE_BENCH_MEASURE_SECONDS shorten the runs and
then MLCYCLE_BENCH_RESULTS_DIR must send the figures elsewhere (benchmarks/record.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.record import record
from mlcycle.dev.processes import free_port

CONNECTIONS = 8
BATCHED_CONNECTIONS = 64
# Shorter runs only check that everything works: the recorded figures use the defaults.
WARMUP_SECONDS = int(os.environ.get("MLCYCLE_BENCH_WARMUP_SECONDS", "3"))
MEASURE_SECONDS = int(os.environ.get("MLCYCLE_BENCH_MEASURE_SECONDS", "10"))
RECORDED_DURATIONS = (3, 10)
READY_TIMEOUT = 240
# uvloop 0.22 no longer creates a loop in get_event_loop(), which MLServer 1.7's inference
# pool workers rely on: they die at start and the model never loads.
MLSERVER_PINS = (
    "mlserver==1.7.1",
    "mlserver-mlflow==1.7.1",
    "scikit-learn==1.9.1",
    "uvloop==0.21.0",
)
GHZ_VERSION = "v0.121.0"
# The tritonclient threads are spread over one process per CPU: in one process, every
# client's encoding and decoding would queue on one GIL, and the figure would be that
# process's ceiling rather than the server's.
TRITON_PROCESSES = os.cpu_count() or 1
CACHE = Path(os.environ.get("MLCYCLE_CACHE", Path.home() / ".cache" / "mlcycle"))
REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PROTO = REPO_ROOT / "operator" / "mlcycle" / "dataplane" / "grpc" / "grpc_predict_v2.proto"

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = [5.1, 3.5, 1.4, 0.2]
MLFLOW_BODY = json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": [ROW]}})
OIP_BODY = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
)
# OIP_BODY as a ModelInferRequest: the row in the typed contents, as JSON carries it.
GRPC_REQUEST = json.dumps(
    {
        "model_name": "iris",
        "inputs": [
            {
                "name": "input-0",
                "datatype": "FP64",
                "shape": [1, 4],
                "contents": {"fp64_contents": ROW},
            }
        ],
    }
)


def save_iris_model(directory: Path) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    path = directory / "iris"
    # cloudpickle: the format every MLflow-based server here can read.
    mlflow.sklearn.save_model(
        model,
        str(path),
        serialization_format="cloudpickle",
        signature=infer_signature(features, model.predict(features)),
    )
    return path


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is missing and installing it needs root: apt-get install -y wrk")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def ensure_ghz() -> Path:
    """ghz of the pinned version, built from the Go module proxy (its source checked against
    Go's checksum database) into the cache on first use: Debian has no package of it."""
    binary = CACHE / "bin" / f"ghz-{GHZ_VERSION}" / "ghz"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"ghz is missing and building it needs Go: {binary}")
    # Built beside and renamed into place: an interrupted build leaves no binary to trust.
    partial = binary.parent / ".partial"
    subprocess.run(
        [go, "install", f"github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"],
        env={**os.environ, "GOBIN": str(partial)},
        check=True,
    )
    (partial / "ghz").rename(binary)
    partial.rmdir()
    return binary


def ghz_version(ghz: Path) -> str:
    """The module version built in (`ghz -v` says "dev" when built by `go install`)."""
    go = shutil.which("go")
    if go is None:
        return GHZ_VERSION
    info = subprocess.run([go, "version", "-m", str(ghz)], capture_output=True, text=True)
    module = re.search(r"^\s*mod\s+github\.com/bojand/ghz\s+(\S+)", info.stdout, re.MULTILINE)
    toolchain = re.match(r"\S+: (go\S+)", info.stdout)
    if module is None or toolchain is None:
        return GHZ_VERSION
    return f"{module.group(1)} (built with {toolchain.group(1)})"


def ensure_mlserver_venv() -> Path:
    venv = CACHE / "bench-venvs" / "mlserver"
    marker = venv / ".installed"
    pins = "\n".join(MLSERVER_PINS)
    if marker.exists() and marker.read_text() == pins:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    uv = str(VENV_BIN / "uv")
    subprocess.run([uv, "venv", "-q", "--python", "python3.11", str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *MLSERVER_PINS],
        check=True,
    )
    marker.write_text(pins)
    return venv


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def parse_wrk(output: str) -> dict[str, float]:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    latencies = dict(re.findall(r"^\s*(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors or rate is None or set(latencies) != {"50", "99"}:
        raise RuntimeError(f"unusable wrk run:\n{output}")
    rps = float(rate.group(1))
    return {
        "rps": round(rps, 1),
        "p50_ms": round(_seconds(latencies["50"]) * 1000, 3),
        "p99_ms": round(_seconds(latencies["99"]) * 1000, 3),
    }


@dataclass
class Load:
    wrk: str
    script_dir: Path

    def script(self, body: str) -> Path:
        path = self.script_dir / f"post-{abs(hash(body))}.lua"
        path.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
        return path

    def run(self, url: str, body: str, connections: int, seconds: int) -> dict[str, float]:
        command = [self.wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s"]
        command += ["--latency", "-s", str(self.script(body)), url]
        for attempt in (1, 2):
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            try:
                return parse_wrk(result.stdout + result.stderr)
            except RuntimeError as error:
                if attempt == 2:
                    raise
                print(f"retrying {url} at {connections} connections: {error}", file=sys.stderr)
        raise AssertionError("unreachable")

    def measure(self, url: str, body: str, connections: int) -> dict[str, float]:
        self.run(url, body, connections, WARMUP_SECONDS)
        return self.run(url, body, connections, MEASURE_SECONDS)


def parse_ghz(report: dict[str, Any]) -> dict[str, float]:
    latencies = {row["percentage"]: row["latency"] for row in report["latencyDistribution"]}
    statuses = report["statusCodeDistribution"]
    if set(statuses) != {"OK"} or report["errorDistribution"] or not {50, 99} <= set(latencies):
        raise RuntimeError(f"unusable ghz run: {statuses} {report['errorDistribution']}")
    return {
        "rps": round(report["rps"], 1),
        "p50_ms": round(latencies[50] / 1e6, 3),
        "p99_ms": round(latencies[99] / 1e6, 3),
    }


@dataclass
class GrpcLoad:
    """ghz, set up to load a server as wrk does: a fixed request, closed loop, one worker per
    connection, two OS threads."""

    ghz: Path
    report_dir: Path

    def run(self, address: str, request: str, connections: int, seconds: int) -> dict[str, float]:
        report = self.report_dir / "ghz.json"
        command = [str(self.ghz), "--insecure", "--proto", str(PROTO)]
        command += ["--call", "inference.GRPCInferenceService/ModelInfer", "-d", request]
        command += ["--connections", str(connections), "--concurrency", str(connections)]
        command += ["--cpus", str(min(2, os.cpu_count() or 1)), "-z", f"{seconds}s"]
        # The calls still running at the end are let finish and counted ("close", the
        # default, cancels them and reports them as errors). Without templates the request
        # is sent as given, as wrk's body is, instead of being rendered for every call.
        command += ["--duration-stop", "wait"]
        command += ["--disable-template-functions", "--disable-template-data"]
        command += ["--format", "json", "--output", str(report), address]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ghz failed against {address}:\n{result.stdout}{result.stderr}")
        return parse_ghz(json.loads(report.read_text()))

    def measure(self, address: str, request: str, connections: int) -> dict[str, float]:
        self.run(address, request, connections, WARMUP_SECONDS)
        return self.run(address, request, connections, MEASURE_SECONDS)


def _percentile_ms(ordered: list[float], fraction: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 3)


def tritonclient_load(protocol: str, address: str, threads: int) -> dict[str, float]:
    """`threads` tritonclient clients calling infer at once, spread over TRITON_PROCESSES
    processes of benchmarks/triton_load.py started together."""
    processes = min(TRITON_PROCESSES, threads)
    shares = [threads // processes + (index < threads % processes) for index in range(processes)]
    command = [sys.executable, "-m", "benchmarks.triton_load", protocol, address]
    timing = [str(WARMUP_SECONDS), str(MEASURE_SECONDS)]
    clients = [
        subprocess.Popen(
            [*command, str(share), *timing],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
            text=True,
        )
        for share in shares
    ]
    try:
        for client in clients:
            assert client.stdout is not None
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError(f"tritonclient {protocol} load did not start")
        for client in clients:
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        timeout = WARMUP_SECONDS + MEASURE_SECONDS + 60
        outputs = [client.communicate(timeout=timeout)[0] for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    if any(client.returncode for client in clients):
        raise RuntimeError(f"tritonclient {protocol} load failed (its traceback is above)")
    reports = [json.loads(output) for output in outputs]
    latencies = sorted(value for report in reports for value in report["latencies_s"])
    client_cpus = sum(report["cpu_s"] for report in reports) / MEASURE_SECONDS
    print(f"  tritonclient {protocol}: clients used {client_cpus:.2f} CPUs", file=sys.stderr)
    return {
        "rps": round(len(latencies) / MEASURE_SECONDS, 1),
        "p50_ms": _percentile_ms(latencies, 0.50),
        "p99_ms": _percentile_ms(latencies, 0.99),
    }


def _answers(url: str, body: str) -> bool:
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def running(
    name: str, command: list[str], url: str, body: str, log_dir: Path, cwd: Path = REPO_ROOT
) -> Iterator[str]:
    log = log_dir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=output,
            cwd=cwd,
            # `mlflow models serve` execs `uvicorn` by name: this virtualenv's must be found.
            env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _answers(url, body):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {url}; see {log}:\n{log.read_text()}")
            time.sleep(0.5)
        print(f"measuring {name}", file=sys.stderr, flush=True)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def free_port_besides(port: int) -> int:
    """A free port other than `port`, which is free too until its server binds it."""
    while (other := free_port()) == port:
        pass
    return other


def _mlcycle(model: Path, port: int, *flags: str, grpc_port: int | None = None) -> list[str]:
    # gRPC stays on, as `mlcycle serve` runs by default, but on a free port: the default 8081
    # may still be held by the server measured before (or anything else on the machine), and
    # a single-worker server refuses to start when its gRPC port is taken.
    return [
        *(sys.executable, "-m", "mlcycle.cli", "serve", "--model-uri", str(model)),
        *("--model-name", "iris", "--host", "127.0.0.1", "--port", str(port)),
        *("--grpc-port", str(grpc_port or free_port_besides(port))),
        *("--log-level", "WARNING", *flags),
    ]


def _mlserver_dir(model: Path, directory: Path, port: int) -> Path:
    directory.mkdir()
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
    (directory / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": "iris",
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model)},
    }
    (directory / "model-settings.json").write_text(json.dumps(model_settings))
    return directory


def measure_all(work: Path) -> dict[str, dict[str, float]]:
    load = Load(ensure_wrk(), work)
    grpc_load = GrpcLoad(ensure_ghz(), work)
    mlserver_venv = ensure_mlserver_venv()
    model = save_iris_model(work)
    results: dict[str, dict[str, float]] = {}

    def invocations(port: int) -> str:
        return f"http://127.0.0.1:{port}/invocations"

    port = free_port()
    grpc_port = free_port_besides(port)
    served = _mlcycle(model, port, grpc_port=grpc_port)
    with running("mlcycle", served, invocations(port), MLFLOW_BODY, work) as url:
        results["mlcycle"] = load.measure(url, MLFLOW_BODY, CONNECTIONS)
        results["mlcycle_batched_64"] = load.measure(url, MLFLOW_BODY, BATCHED_CONNECTIONS)
        oip_url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
        results["mlcycle_v2"] = load.measure(oip_url, OIP_BODY, CONNECTIONS)
        grpc_address = f"127.0.0.1:{grpc_port}"
        results["mlcycle_grpc"] = grpc_load.measure(grpc_address, GRPC_REQUEST, CONNECTIONS)
        results["tritonclient_grpc"] = tritonclient_load("grpc", grpc_address, CONNECTIONS)
        results["tritonclient_http"] = tritonclient_load("http", f"127.0.0.1:{port}", CONNECTIONS)
    port = free_port()
    unbatched = _mlcycle(model, port, "--max-batch-size", "1")
    with running("mlcycle_unbatched", unbatched, invocations(port), MLFLOW_BODY, work) as url:
        results["mlcycle_unbatched_64"] = load.measure(url, MLFLOW_BODY, BATCHED_CONNECTIONS)
    port = free_port()
    pyfunc = _mlcycle(model, port, "--pyfunc")
    with running("mlcycle_pyfunc", pyfunc, invocations(port), MLFLOW_BODY, work) as url:
        results["mlcycle_pyfunc"] = load.measure(url, MLFLOW_BODY, CONNECTIONS)
    port = free_port()
    bare = [sys.executable, "-m", "benchmarks.bare_server", str(model), str(port)]
    with running("bare", bare, invocations(port), MLFLOW_BODY, work) as url:
        results["bare"] = load.measure(url, MLFLOW_BODY, CONNECTIONS)
        results["bare_64"] = load.measure(url, MLFLOW_BODY, BATCHED_CONNECTIONS)
    port = free_port()
    mlflow_serve = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model)]
    mlflow_serve += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with running("mlflow_serve", mlflow_serve, invocations(port), MLFLOW_BODY, work) as url:
        results["mlflow_serve"] = load.measure(url, MLFLOW_BODY, CONNECTIONS)
    port = free_port()
    settings = _mlserver_dir(model, work / "mlserver", port)
    mlserver = [str(mlserver_venv / "bin" / "mlserver"), "start", str(settings)]
    with running("mlserver", mlserver, invocations(port), MLFLOW_BODY, work, cwd=settings) as url:
        results["mlserver"] = load.measure(url, MLFLOW_BODY, CONNECTIONS)
    return results


def _mlserver_versions() -> dict[str, str]:
    return {pin.split("==")[0] + " (comparator venv)": pin.split("==")[1] for pin in MLSERVER_PINS}


def main() -> None:
    shortened = (WARMUP_SECONDS, MEASURE_SECONDS) != RECORDED_DURATIONS
    if shortened and not os.environ.get("MLCYCLE_BENCH_RESULTS_DIR"):
        raise SystemExit(
            "shortened runs are trials: set MLCYCLE_BENCH_RESULTS_DIR so that they do not "
            "replace benchmarks/results/model-server.json"
        )
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-serve-") as work:
        results = measure_all(Path(work))
    wrk_version = subprocess.run(
        [ensure_wrk(), "-v"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    ghz = ghz_version(ensure_ghz())
    from benchmarks.record import versions

    path = record(
        "model-server",
        results,
        {
            **versions("mlflow", "scikit-learn", "uvicorn", "uvloop", "httptools", "orjson"),
            **versions("grpcio", "protobuf", "tritonclient", "geventhttpclient"),
            **_mlserver_versions(),
            "wrk": wrk_version.strip(),
            "ghz": ghz,
        },
    )
    print(f"model server figures written to {path}")
    for name, figures in results.items():
        print(f"  {name:22s} {figures}")


if __name__ == "__main__":
    main()
