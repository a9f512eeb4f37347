"""The `mlcycle serve` process: uvicorn (uvloop, httptools) running the model server.

With --workers N, uvicorn's supervisor binds the port once and starts N worker processes
that accept on it; each loads the model itself. Their metrics go to prometheus-client's
multiprocess directory, which must be in the environment before a worker imports
prometheus_client, hence set here, before the workers start; so does the directory where
each worker marks itself loaded (readiness.py). Workers are spawned, not forked: they set
up logging again, the same way, so their lines look like the main process's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import uvicorn

from mlcycle.dataplane.server.config import CONFIG_ENV, ServerConfig
from mlcycle.dataplane.server.metrics import MULTIPROCESS_DIR_ENV
from mlcycle.dataplane.server.readiness import READY_DIR_ENV, WORKERS_ENV


def app_from_environment() -> object:
    """Worker processes build their app from the configuration the supervisor left them."""
    from mlcycle.dataplane.server.app import ModelServer

    config = ServerConfig.model_validate_json(os.environ[CONFIG_ENV])
    configure_logging(config)
    return ModelServer(config)


def configure_logging(config: ServerConfig) -> None:
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def _uvicorn_settings(config: ServerConfig) -> dict[str, object]:
    return {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "date_header": False,
        # No proxy header rewriting: the server never uses the client address.
        "proxy_headers": False,
        "log_level": config.log_level.lower(),
        "timeout_keep_alive": config.keep_alive_seconds,
        "timeout_graceful_shutdown": config.graceful_shutdown_seconds,
        "backlog": 2048,
    }


def serve(config: ServerConfig) -> None:
    configure_logging(config)
    if config.workers == 1:
        from mlcycle.dataplane.server.app import ModelServer

        uvicorn.run(ModelServer(config), **_uvicorn_settings(config))  # type: ignore[arg-type]
        return
    owned_dir = None
    if not os.environ.get(MULTIPROCESS_DIR_ENV):
        owned_dir = tempfile.mkdtemp(prefix="mlcycle-metrics-")
        os.environ[MULTIPROCESS_DIR_ENV] = owned_dir
    os.environ[CONFIG_ENV] = config.model_dump_json()
    ready_dir = tempfile.mkdtemp(prefix="mlcycle-ready-")
    os.environ[READY_DIR_ENV] = ready_dir
    os.environ[WORKERS_ENV] = str(config.workers)
    try:
        uvicorn.run(
            "mlcycle.dataplane.server.main:app_from_environment",
            factory=True,
            workers=config.workers,
            **_uvicorn_settings(config),  # type: ignore[arg-type]
        )
    finally:
        shutil.rmtree(ready_dir, ignore_errors=True)
        if owned_dir is not None:
            shutil.rmtree(owned_dir, ignore_errors=True)
