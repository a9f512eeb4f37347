"""How an operator instance is configured: CLI flags and environment become one typed object."""

from __future__ import annotations

import random

from pydantic import BaseModel, Field, SecretStr, model_validator

from mlcycle.api.redaction import userinfo, without_userinfo


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
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking server, as pods are given it: a `user:password@` in "
        "the value given is moved to `mlflow_basic_auth` and never reaches a pod.",
    )
    mlflow_basic_auth: tuple[str, SecretStr] | None = Field(
        default=None,
        description="The operator's own MLflow username and password, from the tracking URI. "
        "MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN in the operator's environment "
        "are read by MLflow itself and take precedence.",
    )
    mlflow_credentials_secret: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Secret, in each workload's namespace, whose MLFLOW_TRACKING_USERNAME, "
        "MLFLOW_TRACKING_PASSWORD and MLFLOW_TRACKING_TOKEN keys training and serving pods "
        "read by secretKeyRef (each optional).",
    )
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

    @model_validator(mode="after")
    def _credentials_out_of_the_tracking_uri(self) -> OperatorConfig:
        # The URI is copied into every training and serving pod and shown in status: the
        # credentials it may carry stay with the operator.
        uri = self.mlflow_tracking_uri
        if uri is not None and (found := userinfo(uri)) is not None:
            self.mlflow_tracking_uri = without_userinfo(uri)
            if self.mlflow_basic_auth is None:
                self.mlflow_basic_auth = (found[0], SecretStr(found[1]))
        return self
