"""What the pods of mlcycle's serving programs share (model servers and routers): the
default image, their own address from the downward API, the user's overlay.

The model servers (`plan.inferenceservice.servers`) and the router (`plan.traffic.router`)
both build these pods, so this module sits beside both packages rather than inside either.
"""

from __future__ import annotations

from typing import Any, Final

from mlcycle.api.v1alpha1.common import WorkloadTemplate
from mlcycle.plan.workload import merged_env, with_workload

DEFAULT_IMAGE: Final = "ghcr.io/mlcycle/mlcycle:0.1.0"
"""For pods whose spec names no image, when the operator is given none (`--serving-image`;
the chart passes its own image, so servers run the operator's release)."""

POD_IP_ENV: Final = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def with_overlay(
    pod: dict[str, Any], container: dict[str, Any], template: WorkloadTemplate
) -> dict[str, Any]:
    """The user's env, resources and pod overlay laid over a container and its pod.

    Model servers and routers run mlcycle's own program, which writes only to /tmp: the
    root filesystem is read-only."""
    container["env"] = merged_env(container["env"], template)
    return with_workload(pod, container, template, read_only_root=True)
