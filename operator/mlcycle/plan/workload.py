"""What a `WorkloadTemplate` (TrainingJob, model servers, routers) adds to the pods mlcycle
creates: the user's env over ours, resources, and the pod overlay.

Pure: manifests are camelCase dicts for server-side apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlcycle.api.v1alpha1.common import ApiModel, WorkloadTemplate


def dump(model: ApiModel) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def merged_env(ours: Sequence[dict[str, Any]], template: WorkloadTemplate) -> list[dict[str, Any]]:
    """Our variables, then the user's; a user variable of the same name replaces ours."""
    overridden = {variable.name for variable in template.env}
    users = [dump(variable) for variable in template.env]
    return [variable for variable in ours if variable["name"] not in overridden] + users


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
