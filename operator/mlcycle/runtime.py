"""Runs one operator instance: the probes/metrics endpoint beside kopf's event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.http import serve_probes_and_metrics
from mlcycle.adapters.kube import IO_THREADS, new_api_client
from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.adapters.peering import ensure_peering_objects, read_peerings
from mlcycle.adapters.prometheus import PrometheusClient
from mlcycle.adapters.registry import MlflowRegistry
from mlcycle.adapters.tracking import MlflowTracking
from mlcycle.config import OperatorConfig
from mlcycle.handlers.registration import OperatorContext, build_registry, configure_settings
from mlcycle.plan.inferenceservice import DEFAULT_IMAGE
from mlcycle.reconcile.inferenceservice import InferenceServiceDeps
from mlcycle.reconcile.modelversion import ModelVersionDeps
from mlcycle.reconcile.standby import StandbyGate
from mlcycle.reconcile.trainingjob import TrainingDeps


def configure_logging(config: OperatorConfig) -> None:
    log_format = kopf.LogFormat.JSON if config.log_json else kopf.LogFormat.FULL
    # log_refkey puts the object's namespace/name under one key in every JSON line.
    kopf.configure(log_format=log_format, log_refkey="object", verbose=config.log_level == "DEBUG")
    logging.getLogger().setLevel(config.log_level)


async def run_operator(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    # Adapters block (the kubernetes and MLflow clients are synchronous) and run in threads;
    # the default pool of cpu+4 threads queues them behind each other under a burst.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="mlcycle-io")
    )
    metrics = OperatorMetrics()
    cluster = await asyncio.to_thread(_cluster_client)
    basic_auth = (
        (config.mlflow_basic_auth[0], config.mlflow_basic_auth[1].get_secret_value())
        if config.mlflow_basic_auth is not None
        else None
    )

    # One adapter per server for the operator's life: the tracking one remembers experiment
    # ids.
    @functools.cache
    def tracking_for(tracking_uri: str) -> MlflowTracking:
        return MlflowTracking(tracking_uri, basic_auth=basic_auth)

    @functools.cache
    def registry_for(tracking_uri: str) -> MlflowRegistry:
        return MlflowRegistry(tracking_uri, basic_auth=basic_auth)

    model_versions = ModelVersionDeps(
        cluster=cluster,
        registry_for=registry_for,
        default_tracking_uri=config.mlflow_tracking_uri,
        metrics=metrics.registration,
        drift_check_seconds=config.drift_check_seconds,
    )
    identity = _identity()
    context = OperatorContext(
        config=config,
        metrics=metrics,
        standby=StandbyGate(
            None
            if config.standalone
            else functools.partial(
                read_peerings, new_api_client(), config.peering_name, config.namespaces
            ),
            identity,
            config.priority,
        ),
        training=TrainingDeps(
            cluster=cluster,
            tracking_for=tracking_for,
            default_tracking_uri=config.mlflow_tracking_uri,
            mlflow_credentials_secret=config.mlflow_credentials_secret,
            metrics=metrics.training,
            mlflow_ui_url=config.mlflow_ui_url,
        ),
        model_versions=model_versions,
        inference_services=InferenceServiceDeps(
            cluster=cluster,
            registry_for=registry_for,
            default_tracking_uri=config.mlflow_tracking_uri,
            mlflow_credentials_secret=config.mlflow_credentials_secret,
            metrics=metrics.rollouts,
            # spec.analysis.prometheus needs a Prometheus; without one the routers' own
            # metrics decide.
            prometheus=PrometheusClient(config.prometheus_url) if config.prometheus_url else None,
            default_image=config.serving_image or DEFAULT_IMAGE,
            model_lock=model_versions.model_lock,
        ),
    )
    registry = build_registry()
    settings = configure_settings(config)
    kopf_ready = asyncio.Event()
    if not config.standalone:
        await asyncio.to_thread(_ensure_peering, config)

    runner = await serve_probes_and_metrics(
        config.http_host, config.http_port, metrics, ready=kopf_ready.is_set
    )
    waiter = asyncio.create_task(_forward_ready(kopf_ready, ready_flag))
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            memo=kopf.Memo(context=context),
            clusterwide=config.clusterwide,
            namespaces=config.namespaces,
            standalone=config.standalone,
            priority=config.priority,
            peering_name=config.peering_name,
            identity=cast(Any, identity),
            stop_flag=stop_flag,
            ready_flag=kopf_ready,
        )
    finally:
        waiter.cancel()
        await runner.cleanup()


def _cluster_client() -> ClusterClient:
    # Discovery happens here, once, rather than on the first reconcile.
    return ClusterClient(new_api_client())


def _identity() -> str:
    # Chosen here rather than by kopf: the standby gate must know which peer is this one.
    pod = os.environ.get("POD_ID") or os.environ.get("HOSTNAME") or "mlcycle"
    return f"{pod}-{uuid.uuid4().hex[:8]}"


def _ensure_peering(config: OperatorConfig) -> None:
    with new_api_client() as api:
        ensure_peering_objects(api, config.peering_name, config.namespaces)


async def _forward_ready(
    kopf_ready: asyncio.Event, ready_flag: asyncio.Event | threading.Event | None
) -> None:
    await kopf_ready.wait()
    if ready_flag is not None:
        ready_flag.set()
