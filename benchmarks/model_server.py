"""Model servers side by side: one scikit-learn iris model, single-row requests, wrk.

Servers, one at a time on loopback, each given the same model directory:
- `mlcycle`: `mlcycle serve` (native sklearn flavor, signature validation and metrics on)
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
Open Inference Protocol.
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

from benchmarks.record import record
from mlcycle.dev.processes import free_port

CONNECTIONS = 8
BATCHED_CONNECTIONS = 64
WARMUP_SECONDS = 3
MEASURE_SECONDS = 10
READY_TIMEOUT = 240
# uvloop 0.22 no longer creates a loop in get_event_loop(), which MLServer 1.7's inference
# pool workers rely on: they die at start and the model never loads.
MLSERVER_PINS = (
    "mlserver==1.7.1",
    "mlserver-mlflow==1.7.1",
    "scikit-learn==1.9.1",
    "uvloop==0.21.0",
)
CACHE = Path(os.environ.get("MLCYCLE_CACHE", Path.home() / ".cache" / "mlcycle"))
REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
ROW = [5.1, 3.5, 1.4, 0.2]
MLFLOW_BODY = json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": [ROW]}})
OIP_BODY = json.dumps(
    {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
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


def _mlcycle(model: Path, port: int, *flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "mlcycle.cli", "serve", "--model-uri", str(model)),
        *("--model-name", "iris", "--host", "127.0.0.1", "--port", str(port)),
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
    mlserver_venv = ensure_mlserver_venv()
    model = save_iris_model(work)
    results: dict[str, dict[str, float]] = {}

    def invocations(port: int) -> str:
        return f"http://127.0.0.1:{port}/invocations"

    port = free_port()
    with running("mlcycle", _mlcycle(model, port), invocations(port), MLFLOW_BODY, work) as url:
        results["mlcycle"] = load.measure(url, MLFLOW_BODY, CONNECTIONS)
        results["mlcycle_batched_64"] = load.measure(url, MLFLOW_BODY, BATCHED_CONNECTIONS)
        oip_url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
        results["mlcycle_v2"] = load.measure(oip_url, OIP_BODY, CONNECTIONS)
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
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-serve-") as work:
        results = measure_all(Path(work))
    wrk_version = subprocess.run(
        [ensure_wrk(), "-v"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    from benchmarks.record import versions

    path = record(
        "model-server",
        results,
        {
            **versions("mlflow", "scikit-learn", "uvicorn", "uvloop", "httptools", "orjson"),
            **_mlserver_versions(),
            "wrk": wrk_version.strip(),
        },
    )
    print(f"model server figures written to {path}")
    for name, figures in results.items():
        print(f"  {name:22s} {figures}")


if __name__ == "__main__":
    main()
