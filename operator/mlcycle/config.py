"""How an operator instance is configured: CLI flags and environment become one typed object."""

from __future__ import annotations

import random

from pydantic import BaseModel, Field, model_validator


def _random_priority() -> int:
    # kopf lets replicas of equal priority run side by side (it only warns); a distinct
    # priority per replica makes exactly one of them active and the others stand by.
    return random.randint(1, 2**31 - 1)


class OperatorConfig(BaseModel):
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means all namespaces."
    )
    peering_name: str = "mlcycle"
    standalone: bool = Field(
        default=False, description="No peering: only for a single replica you are sure of."
    )
    priority: int = Field(default_factory=_random_priority, ge=0)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    mlflow_tracking_uri: str | None = None
    mlflow_ui_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The MLflow UI's external address, for status.mlflowRunUrl.",
    )
    prometheus_url: str | None = Field(
        default=None, description="Prometheus for spec.analysis.prometheus checks of rollouts."
    )
    drift_check_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often a Ready ModelVersion is compared with MLflow (drift).",
    )
    serving_image: str | None = Field(
        default=None,
        description="Image of model-server and router pods whose InferenceService names none.",
    )
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = True

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @model_validator(mode="after")
    def _namespaces_unique(self) -> OperatorConfig:
        self.namespaces = sorted(set(self.namespaces))
        return self
