"""One process of the tritonclient load of benchmarks/model_server.py.

`python -m benchmarks.triton_load grpc|http ADDRESS THREADS WARMUP_S MEASURE_S`: THREADS
threads, each with a tritonclient client of its own (one connection each), call infer with
the benchmark's single row in a closed loop. Each thread makes one call before the clock
starts, so connecting and first-call costs stay out; then the process prints `ready` and
waits for a line on stdin, which lets the parent start every process at once. Calls started
in the warm-up are not counted; those started in the measured window are. It prints one JSON
line: the calls' latencies in seconds, and the CPU seconds the process spent in the window.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ROW = [5.1, 3.5, 1.4, 0.2]
MODEL = "iris"


def infer_call(protocol: str, address: str) -> Callable[[], Any]:
    """A call of one new client; inputs are built per call, as an application would."""
    row = np.array([ROW], dtype=np.float64)
    if protocol == "grpc":
        import tritonclient.grpc as triton_grpc

        # Channels to one address otherwise share one connection (grpc's global subchannel
        # pool): eight clients would multiplex over a single socket, where wrk and ghz use
        # eight connections.
        grpc_client = triton_grpc.InferenceServerClient(
            address, channel_args=[("grpc.use_local_subchannel_pool", 1)]
        )

        def call_grpc() -> Any:
            tensor = triton_grpc.InferInput("input-0", [1, 4], "FP64")
            tensor.set_data_from_numpy(row)
            return grpc_client.infer(MODEL, [tensor])

        return call_grpc
    import tritonclient.http as triton_http

    # concurrency=1: a pool of one connection, kept alive between calls.
    http_client = triton_http.InferenceServerClient(address, concurrency=1)

    def call_http() -> Any:
        tensor = triton_http.InferInput("input-0", [1, 4], "FP64")
        tensor.set_data_from_numpy(row)  # binary_data=True: the binary tensor extension
        return http_client.infer(MODEL, [tensor])

    return call_http


def main() -> None:
    protocol, address = sys.argv[1], sys.argv[2]
    threads, warmup_s, measure_s = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    connected = threading.Barrier(threads + 1)
    go = threading.Event()
    window: dict[str, float] = {}
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []

    def loop(recorded: list[float]) -> None:
        try:
            # Made in the thread that uses it: the HTTP client's gevent sockets belong to the
            # hub of the thread that created them.
            call = infer_call(protocol, address)
            answer = call().as_numpy("output-0")
            if answer is None or answer.shape != (1,):
                raise RuntimeError(f"unexpected answer over {protocol}: {answer!r}")
        except BaseException as error:
            failures.append(error)
            connected.abort()
            return
        connected.wait()
        go.wait()
        try:
            while (begun := time.perf_counter()) < window["until"]:
                call()
                if begun >= window["from"]:
                    recorded.append(time.perf_counter() - begun)
        except BaseException as error:
            failures.append(error)

    workers = [threading.Thread(target=loop, args=(recorded,)) for recorded in latencies]
    for worker in workers:
        worker.start()
    try:
        connected.wait()
    except threading.BrokenBarrierError:
        raise failures[0] from None
    print("ready", flush=True)
    sys.stdin.readline()

    started = time.perf_counter()
    window["from"], window["until"] = started + warmup_s, started + warmup_s + measure_s
    go.set()
    time.sleep(warmup_s)
    cpu_from = time.process_time()
    time.sleep(max(0.0, window["until"] - time.perf_counter()))
    cpu_s = time.process_time() - cpu_from
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    measured = [value for recorded in latencies for value in recorded]
    print(json.dumps({"latencies_s": measured, "cpu_s": cpu_s}), flush=True)


if __name__ == "__main__":
    main()
