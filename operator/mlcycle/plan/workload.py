"""What a `WorkloadTemplate` (TrainingJob, model servers, routers) adds to the pods mlcycle
creates: the user's env over ours, resources, and the pod overlay.

Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from mlcycle.api.v1alpha1.common import ApiModel, WorkloadTemplate

# MLflow's own names: its client reads them in the pod, whatever the training script does.
MLFLOW_CREDENTIAL_KEYS: Final = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def dump(model: ApiModel) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def merged_env(ours: Sequence[dict[str, Any]], template: WorkloadTemplate) -> list[dict[str, Any]]:
    """Our variables, then the user's; a user variable of the same name replaces ours."""
    overridden = {variable.name for variable in template.env}
    users = [dump(variable) for variable in template.env]
    return [variable for variable in ours if variable["name"] not in overridden] + users


def secret_env(name: str, secret_name: str, *, optional: bool = False) -> dict[str, Any]:
    """`name` from the key of the same name in `secret_name`, by reference: a literal value
    would be readable by anyone who can read the workload, and would land in its
    managedFields and in audit logs."""
    ref: dict[str, Any] = {"name": secret_name, "key": name}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def mlflow_env(tracking_uri: str, credentials_secret: str | None) -> list[dict[str, Any]]:
    """How a pod reaches MLflow: the address (never with credentials in it) and, when the
    operator names a credentials Secret, MLflow's credential variables from it. Each key is
    optional: a Secret holds a username and password, or a token."""
    env = [{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri}]
    if credentials_secret is not None:
        env.extend(
            secret_env(key, credentials_secret, optional=True) for key in MLFLOW_CREDENTIAL_KEYS
        )
    return env


def with_workload(
    pod: dict[str, Any], container: dict[str, Any], template: WorkloadTemplate
) -> dict[str, Any]:
    """`template`'s resources and volume mounts on `container`, its overlay on `pod`."""
    resources = template.resources
    if resources is not None and (resources.requests or resources.limits):
        container["resources"] = {
            key: dict(value)
            for key, value in (("requests", resources.requests), ("limits", resources.limits))
            if value
        }
    overlay = template.pod_template
    if overlay is None:
        return pod
    if overlay.volume_mounts:
        container["volumeMounts"] = [dump(mount) for mount in overlay.volume_mounts]
    if overlay.node_selector:
        pod["nodeSelector"] = dict(overlay.node_selector)
    if overlay.tolerations:
        pod["tolerations"] = [dump(toleration) for toleration in overlay.tolerations]
    if overlay.affinity is not None:
        pod["affinity"] = overlay.affinity
    if overlay.service_account_name is not None:
        pod["serviceAccountName"] = overlay.service_account_name
    if overlay.volumes:
        pod["volumes"] = list(overlay.volumes)
    if overlay.image_pull_secrets:
        pod["imagePullSecrets"] = [dump(secret) for secret in overlay.image_pull_secrets]
    if overlay.priority_class_name is not None:
        pod["priorityClassName"] = overlay.priority_class_name
    if overlay.security_context is not None:
        pod["securityContext"] = overlay.security_context
    return pod
