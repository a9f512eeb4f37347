"""kopf registrations: every kind gets one level-triggered reconcile, a few lines long."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from mlcycle.adapters.kube import kube_configuration
from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.api.v1alpha1 import (
    FINALIZER,
    KINDS,
    CustomResource,
    InferenceService,
    ModelVersion,
    TrainingJob,
)
from mlcycle.config import OperatorConfig
from mlcycle.handlers.inferenceservice import register_inferenceservice
from mlcycle.handlers.modelversion import register_modelversion
from mlcycle.handlers.trainingjob import register_trainingjob
from mlcycle.reconcile.inferenceservice import InferenceServiceDeps
from mlcycle.reconcile.modelversion import ModelVersionDeps
from mlcycle.reconcile.standby import StandbyGate
from mlcycle.reconcile.trainingjob import TrainingDeps

FIELD_MANAGER = "mlcycle-operator"


@dataclass(frozen=True)
class OperatorContext:
    """What every handler may use; built once per operator instance, passed as kopf's memo."""

    config: OperatorConfig
    metrics: OperatorMetrics
    standby: StandbyGate
    training: TrainingDeps
    model_versions: ModelVersionDeps
    inference_services: InferenceServiceDeps


def configure_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's bookkeeping goes into annotations under our own prefix: the status schema is
    # structural, so anything kopf wrote there would be pruned and rewritten in a loop.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mlcycle.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="mlcycle.dev", key="last-handled-configuration"
    )
    settings.posting.reporting_component = FIELD_MANAGER
    # Events are posted deliberately, on transitions; handler log lines stay logs.
    settings.posting.level = logging.CRITICAL
    settings.peering.name = config.peering_name
    settings.persistence.finalizer = FINALIZER
    return settings


def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration our own API clients use."""
    configuration = kube_configuration()
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _space, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


_REGISTER: dict[type[CustomResource], Callable[[kopf.OperatorRegistry], None]] = {
    TrainingJob: register_trainingjob,
    ModelVersion: register_modelversion,
    InferenceService: register_inferenceservice,
}


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    # A registry of our own starts without kopf's default login handlers.
    kopf.on.login(registry=registry)(login)
    for kind in KINDS:
        _REGISTER[kind](registry)  # a kind without handlers fails here, at startup
    return registry
