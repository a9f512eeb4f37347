"""How long from `create` until the operator has written status, against the floor: how
long until a plain watch on the same API server sees the object at all.

Both are measured in one run, on one local stack, for the same objects.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from benchmarks.record import latency_summary, record
from mlcycle.dev.cluster import LocalStack
from mlcycle.dev.toolchain import pinned_versions

OBJECTS = 100
NAMESPACE = "bench"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mlcycle-bench-") as state_dir:
        stack = LocalStack(Path(state_dir))
        started = time.monotonic()
        stack.up(without=["node-agent", "s3", "mlflow"])
        control_plane_s = time.monotonic() - started
        try:
            results = _measure(stack)
        finally:
            stack.down()
    results["control_plane_start_s"] = round(control_plane_s, 2)
    path = record(
        "reconcile_latency",
        results,
        {"kubernetes_control_plane": pinned_versions()["KUBERNETES_VERSION"]},
    )
    print(path.read_text())


def _measure(stack: LocalStack) -> dict[str, Any]:
    env = stack.env()
    stack.install_crds()
    stack.kubectl("create", "namespace", NAMESPACE)
    stack.start_operator(NAMESPACE)
    api = config.new_client_from_config(config_file=env["KUBECONFIG"])
    custom = client.CustomObjectsApi(api)

    created_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    observed_at: dict[str, float] = {}
    done = threading.Event()

    def follow() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            custom.list_namespaced_custom_object,
            "mlcycle.dev",
            "v1alpha1",
            NAMESPACE,
            "trainingjobs",
            timeout_seconds=120,
        ):
            now = time.perf_counter()
            obj = event["object"]
            name = obj["metadata"]["name"]
            seen_at.setdefault(name, now)
            if (obj.get("status") or {}).get("observedGeneration") == 1:
                observed_at.setdefault(name, now)
            if len(observed_at) == OBJECTS:
                done.set()
                stream.stop()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(1)  # let the watch establish before the first create
    burst_started = time.perf_counter()
    for index in range(OBJECTS):
        name = f"tj-{index:04d}"
        body = {
            "apiVersion": "mlcycle.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {"image": "bench", "command": ["python", "-c", "pass"]},
        }
        created_at[name] = time.perf_counter()
        custom.create_namespaced_custom_object(
            "mlcycle.dev", "v1alpha1", NAMESPACE, "trainingjobs", body
        )
    if not done.wait(timeout=120):
        raise TimeoutError(f"operator observed only {len(observed_at)} of {OBJECTS} objects")
    burst_s = time.perf_counter() - burst_started
    return {
        "objects": OBJECTS,
        "latency": (
            "from just before the create call to the first watch event (floor) or to the"
            " event carrying status.observedGeneration (operator), in milliseconds"
        ),
        "watch_sees_object": latency_summary([seen_at[n] - created_at[n] for n in created_at]),
        "operator_writes_status": latency_summary(
            [observed_at[n] - created_at[n] for n in created_at]
        ),
        "objects_per_second_to_observed": round(OBJECTS / burst_s, 1),
    }


if __name__ == "__main__":
    main()
