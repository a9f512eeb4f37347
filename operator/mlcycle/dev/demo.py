"""`make demo`: bring the local stack up, install the CRDs, run the operator, apply the
examples, show what happened, and take everything down again (unless --keep)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from mlcycle.dev.cluster import DEFAULT_STATE_DIR, LocalStack
from mlcycle.dev.processes import wait_until
from mlcycle.dev.toolchain import REPO_ROOT

DEMO_NAMESPACE = "mlcycle-demo"


def _show(stack: LocalStack, *args: str) -> None:
    print(f"\n$ kubectl {' '.join(args)}", flush=True)
    print(stack.kubectl(*args, check=False), end="", flush=True)


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def example_manifests() -> list[Path]:
    examples = REPO_ROOT / "examples"
    return sorted([*examples.glob("*.yaml"), *examples.glob("*/*.yaml")])


def run_demo(stack: LocalStack) -> None:
    stack.up()
    stack.install_crds()
    stack.kubectl("create", "namespace", DEMO_NAMESPACE, check=False)
    operator_url = stack.start_operator(DEMO_NAMESPACE)
    for manifest in example_manifests():
        stack.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(manifest))

    def trainings_finished() -> bool:
        items = json.loads(stack.kubectl("get", "tj", "-n", DEMO_NAMESPACE, "-o", "json"))
        return bool(items["items"]) and all(
            (item.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            for item in items["items"]
        )

    wait_until("every example TrainingJob to finish", trainings_finished, timeout=300)

    def model_versions_settled() -> bool:
        items = json.loads(stack.kubectl("get", "mv", "-n", DEMO_NAMESPACE, "-o", "json"))
        return all(
            (item.get("status") or {}).get("phase") in ("Ready", "Failed")
            for item in items["items"]
        )

    wait_until("every ModelVersion to be registered", model_versions_settled, timeout=120)

    def services_ready() -> bool:
        items = json.loads(stack.kubectl("get", "mlisvc", "-n", DEMO_NAMESPACE, "-o", "json"))
        return all((item.get("status") or {}).get("phase") == "Ready" for item in items["items"])

    wait_until("every InferenceService to serve", services_ready, timeout=300)
    for name, answer in ask_iris(stack).items():
        print(f"\n$ POST {name}: {answer}")
    _show(stack, "get", "nodes", "-o", "wide")
    _show(stack, "get", "crds", "-l", "app.kubernetes.io/part-of=mlcycle")
    _show(stack, "get", "mlcycle", "-n", DEMO_NAMESPACE)
    _show(stack, "describe", "trainingjob", "iris", "-n", DEMO_NAMESPACE)
    _show(stack, "get", "jobs,pods", "-n", DEMO_NAMESPACE)
    _show(stack, "describe", "modelversion", "-n", DEMO_NAMESPACE)
    _show(stack, "describe", "inferenceservice", "iris", "-n", DEMO_NAMESPACE)
    _show(stack, "get", "deployments,services", "-n", DEMO_NAMESPACE)
    metrics = _http_get(f"{operator_url}/metrics")
    print("\n$ GET operator /metrics | grep -e mlcycle_reconcile_total -e registrations")
    print(
        "\n".join(
            line
            for line in metrics.splitlines()
            if line.startswith(("mlcycle_reconcile_total", "mlcycle_modelversion_registrations"))
        )
    )


IRIS_ROW = [5.9, 3.0, 5.1, 1.8]
# The model's signature names its columns, so the MLflow scoring protocol wants them named
# (`mlflow models serve` refuses positional rows for such a model, and so does mlcycle).
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def ask_iris(stack: LocalStack) -> dict[str, str]:
    """One prediction through the iris InferenceService's router, in each protocol. There
    is no Service proxy on the local stack: the request goes to the router pod's address,
    as a Service would send it."""
    pods = json.loads(
        stack.kubectl(
            "get", "pods", "-n", DEMO_NAMESPACE, "-o", "json",
            "-l", "mlcycle.dev/inferenceservice=iris,app.kubernetes.io/component=router",
        )
    )["items"]  # fmt: skip
    address = next(pod["status"]["podIP"] for pod in pods if pod["status"].get("podIP"))
    requests = {
        "/v2/models/iris/infer": {
            "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]
        },
        "/invocations": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [IRIS_ROW]}},
    }
    answers = {}
    for path, body in requests.items():
        request = urllib.request.Request(
            f"http://{address}:8080{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answers[path] = response.read().decode()
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlcycle-demo", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args(argv)
    stack = LocalStack(args.state_dir)
    started = time.monotonic()
    try:
        run_demo(stack)
        print(f"\ndemo finished in {time.monotonic() - started:.0f}s", flush=True)
    finally:
        if not args.keep:
            stack.down()
            still_running = [name for name, running in stack.status().items() if running]
            if still_running:
                raise SystemExit(f"processes left behind: {still_running}")
            print("local stack stopped; no processes left behind", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
