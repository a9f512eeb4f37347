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


def run_demo(stack: LocalStack) -> None:
    stack.up()
    stack.install_crds()
    stack.kubectl("create", "namespace", DEMO_NAMESPACE, check=False)
    operator_url = stack.start_operator(DEMO_NAMESPACE)
    for manifest in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        stack.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(manifest))

    def all_observed() -> bool:
        items = json.loads(stack.kubectl("get", "mlcycle", "-n", DEMO_NAMESPACE, "-o", "json"))
        return bool(items["items"]) and all(
            item.get("status", {}).get("observedGeneration") == item["metadata"]["generation"]
            for item in items["items"]
        )

    wait_until("the operator to observe every example", all_observed, timeout=60)
    _show(stack, "get", "nodes", "-o", "wide")
    _show(stack, "get", "crds", "-l", "app.kubernetes.io/part-of=mlcycle")
    _show(stack, "get", "mlcycle", "-n", DEMO_NAMESPACE)
    _show(stack, "describe", "trainingjob", "hello", "-n", DEMO_NAMESPACE)
    metrics = _http_get(f"{operator_url}/metrics")
    print("\n$ GET operator /metrics | grep mlcycle_reconcile_total")
    print(
        "\n".join(
            line for line in metrics.splitlines() if line.startswith("mlcycle_reconcile_total")
        )
    )


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
