"""The operator's own HTTP endpoint: /healthz, /readyz and /metrics on one port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from mlcycle.adapters.metrics import OperatorMetrics


async def serve_probes_and_metrics(
    host: str,
    port: int,
    metrics: OperatorMetrics,
    ready: Callable[[], bool],
) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        # Answering at all proves the event loop is not blocked, which is what a stuck
        # operator fails at; kopf's own watch health is reflected in /readyz.
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready")

    async def metrics_handler(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": metrics.content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
