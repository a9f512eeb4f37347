"""What a `WorkloadTemplate` (TrainingJob, model servers, routers) adds to the pods mlcycle
creates: the user's env over ours, resources, the pod overlay, and the secure defaults it
lays over.

Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from mlcycle.api.v1alpha1.common import ApiModel, PodTemplateOverlay, WorkloadTemplate

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


# Where the writable scratch space is mounted when the root filesystem is read-only.
TMP_VOLUME: Final = "mlcycle-tmp"
TMP_PATH: Final = "/tmp"


def restricted_pod_security() -> dict[str, Any]:
    """The pod half of the "restricted" Pod Security Standard. No `runAsUser`: an image
    with a numeric non-root USER runs as that user, one that runs as root is refused by
    the kubelet instead of being silently given an identity its files do not expect."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container_security(*, read_only_root: bool) -> dict[str, Any]:
    """The container half of the "restricted" Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
    }


def with_workload(
    pod: dict[str, Any],
    container: dict[str, Any],
    template: WorkloadTemplate,
    *,
    read_only_root: bool,
) -> dict[str, Any]:
    """`template`'s resources and volume mounts on `container`, its overlay on `pod`, both
    over mlcycle's secure defaults: every pod passes the "restricted" Pod Security Standard
    (the default of hardened namespaces) unless the user's overlay says otherwise, and
    `read_only_root` is for the images whose programs write only to `/tmp`."""
    overlay = template.pod_template or PodTemplateOverlay()
    pod["securityContext"] = {**restricted_pod_security(), **(overlay.security_context or {})}
    container["securityContext"] = {
        **restricted_container_security(read_only_root=read_only_root),
        **(overlay.container_security_context or {}),
    }
    user_mounts = [dump(mount) for mount in overlay.volume_mounts]
    ours: list[dict[str, Any]] = []
    our_mounts: list[dict[str, Any]] = []
    if not any(mount["mountPath"].rstrip("/") == TMP_PATH for mount in user_mounts):
        ours.append({"name": TMP_VOLUME, "emptyDir": {}})
        our_mounts.append({"name": TMP_VOLUME, "mountPath": TMP_PATH})
    pod["volumes"] = ours + list(overlay.volumes)
    container["volumeMounts"] = our_mounts + user_mounts
    resources = template.resources
    if resources is not None and (resources.requests or resources.limits):
        container["resources"] = {
            key: dict(value)
            for key, value in (("requests", resources.requests), ("limits", resources.limits))
            if value
        }
    if overlay.node_selector:
        pod["nodeSelector"] = dict(overlay.node_selector)
    if overlay.tolerations:
        pod["tolerations"] = [dump(toleration) for toleration in overlay.tolerations]
    if overlay.affinity is not None:
        pod["affinity"] = overlay.affinity
    if overlay.service_account_name is not None:
        pod["serviceAccountName"] = overlay.service_account_name
    if overlay.image_pull_secrets:
        pod["imagePullSecrets"] = [dump(secret) for secret in overlay.image_pull_secrets]
    if overlay.priority_class_name is not None:
        pod["priorityClassName"] = overlay.priority_class_name
    return pod
