"""A tiny model backend for the router's tests and benchmark: a raw ASGI app on uvicorn
(uvloop, httptools) answering MLflow's scoring protocol and the Open Inference Protocol v2.

It predicts a constant (`--prediction`) for every input row, so two backends agree or
disagree on purpose, and names itself in the `X-Served-By` response header, so a client
can count where the router sent each request. Runnable as a plain script (pods of the
local stack run it by path), so it imports nothing from this repository.

    python tests/dataplane_backend.py --name stable --port 9001 [--prediction 0]
        [--delay-ms 0] [--status 200] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _mlflow_rows(request: Any) -> int:
    if isinstance(request, dict):
        if "dataframe_split" in request:
            return len(request["dataframe_split"].get("data") or [])
        for key in ("dataframe_records", "instances", "inputs"):
            if key in request:
                value = request[key]
                if isinstance(value, dict):
                    return len(next(iter(value.values()), []))
                return len(value)
    return 1


def _oip_rows(request: Any) -> int:
    inputs = request.get("inputs") or [{}] if isinstance(request, dict) else [{}]
    shape = inputs[0].get("shape") or [1]
    return int(shape[0])


class Backend:
    def __init__(self, name: str, prediction: Any, delay_s: float, status: int) -> None:
        self.name = name.encode()
        self.prediction = prediction
        self.delay_s = delay_s
        self.status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path: str = scope["path"]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = self.status
        if path == "/invocations":
            rows = _mlflow_rows(orjson.loads(body or b"{}"))
            payload = orjson.dumps({"predictions": [self.prediction] * rows})
        elif path.startswith("/v2/models/") and path.endswith("/infer"):
            rows = _oip_rows(orjson.loads(body or b"{}"))
            model = path.split("/")[3]
            payload = orjson.dumps(
                {
                    "model_name": model,
                    "outputs": [
                        {
                            "name": "predict",
                            "shape": [rows],
                            "datatype": "FP64" if isinstance(self.prediction, float) else "INT64",
                            "data": [self.prediction] * rows,
                        }
                    ],
                }
            )
        elif path in ("/ping", "/health", "/healthz", "/v2/health/ready", "/v2/health/live"):
            status, payload = 200, b"{}"
        else:
            # Echoes what arrived, so tests can see what the router forwarded.
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            status = 404 if path == "/missing" else status
            payload = orjson.dumps(
                {
                    "method": scope["method"],
                    "path": path,
                    "query": scope["query_string"].decode(),
                    "headers": headers,
                    "body": body.decode(errors="replace"),
                }
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-served-by", self.name),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="reported in the X-Served-By header")
    parser.add_argument("--host", default=os.environ.get("POD_IP", "127.0.0.1"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prediction", default="0", help="JSON value predicted for every row")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200, help="status of every prediction")
    args = parser.parse_args()
    app = Backend(args.name, orjson.loads(args.prediction), args.delay_ms / 1000, args.status)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
