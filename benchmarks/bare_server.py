"""The bare reference: the least a Python server can do to answer a prediction.

uvicorn with uvloop and httptools, orjson, and the scikit-learn model's own predict on the
request's rows. No validation, no metrics, no batching: the practical ceiling the model
server is measured against. Run as `python -m benchmarks.bare_server MODEL_DIR PORT`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import mlflow.sklearn
import numpy as np
import orjson
import uvicorn

# The model was fitted on a DataFrame; arrays in the same column order are what it expects.
warnings.filterwarnings("ignore", message="X does not have valid feature names")

HEADERS = [(b"content-type", b"application/json")]


def make_app(model: Any) -> Callable[..., Awaitable[None]]:
    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        rows = orjson.loads(body)["dataframe_split"]["data"]
        predictions = model.predict(np.asarray(rows, dtype=np.float64))
        payload = orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def main(model_dir: str, port: int) -> None:
    uvicorn.run(
        make_app(mlflow.sklearn.load_model(model_dir)),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
