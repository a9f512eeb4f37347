"""`make demo`: bring the local stack up, install the CRDs, run the operator, apply the
examples, show what happened, and take everything down again (unless --keep)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mlcycle.dev.cluster import DEFAULT_STATE_DIR, LocalStack
from mlcycle.dev.processes import free_port, wait_until
from mlcycle.dev.toolchain import REPO_ROOT, binaries

DEMO_NAMESPACE = "mlcycle-demo"


def _kubectl(stack: LocalStack, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [str(binaries().kubectl), *args],
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _show(stack: LocalStack, *args: str) -> None:
    print(f"\n$ kubectl {' '.join(args)}", flush=True)
    print(_kubectl(stack, *args, check=False), end="", flush=True)


def run_demo(stack: LocalStack) -> None:
    stack.up()
    crds = str(REPO_ROOT / "crds")
    _kubectl(stack, "apply", "--server-side", "--force-conflicts", "-f", crds)
    _kubectl(stack, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds)
    _kubectl(stack, "create", "namespace", DEMO_NAMESPACE, check=False)

    port = free_port()
    stack.processes.start(
        "operator",
        [
            sys.executable,
            "-m",
            "mlcycle.cli",
            "run",
            f"--namespace={DEMO_NAMESPACE}",
            "--http-host=127.0.0.1",
            f"--http-port={port}",
        ],
        env={**os.environ, **stack.env()},
        cwd=REPO_ROOT,
    )
    wait_until(
        "operator /readyz",
        lambda: (
            subprocess.run(
                ["curl", "-sf", f"http://127.0.0.1:{port}/readyz"], capture_output=True, check=False
            ).returncode
            == 0
        ),
        timeout=60,
        log_hint=stack.state_dir / "logs" / "operator.log",
    )
    for manifest in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        _kubectl(stack, "apply", "-n", DEMO_NAMESPACE, "-f", str(manifest))

    def all_observed() -> bool:
        items = json.loads(_kubectl(stack, "get", "mlcycle", "-n", DEMO_NAMESPACE, "-o", "json"))
        return bool(items["items"]) and all(
            item.get("status", {}).get("observedGeneration") == item["metadata"]["generation"]
            for item in items["items"]
        )

    wait_until("the operator to observe every example", all_observed, timeout=60)
    _show(stack, "get", "nodes", "-o", "wide")
    _show(stack, "get", "crds", "-l", "app.kubernetes.io/part-of=mlcycle")
    _show(stack, "get", "mlcycle", "-n", DEMO_NAMESPACE)
    _show(stack, "describe", "trainingjob", "hello", "-n", DEMO_NAMESPACE)
    metrics = subprocess.run(
        ["curl", "-s", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    print("\n$ curl operator /metrics | grep mlcycle_reconcile_total")
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
            print("local stack stopped; no processes left behind", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
