"""Writes one pod's status to the API, as the kubelet's status manager does: only when it
changed, against the resourceVersion the worker last saw, looking again on a conflict."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from mlcycle.dev.nodeagent.kubeclient import Api
from mlcycle.dev.nodeagent.podspec import PodView
from mlcycle.dev.nodeagent.podstatus import PodRuntime, build_pod_status
from mlcycle.dev.nodeagent.podworker import pod_fields
from mlcycle.dev.nodeagent.timestamps import utcnow

log = logging.getLogger("mlcycle.nodeagent")


class PodStatusWriter:
    """The status of one pod as last written. `on_pod` gets the pod as the API returned
    it after a write (or re-read it after a conflict); `on_gone` is called when the pod
    no longer exists."""

    def __init__(
        self,
        api: Api,
        on_pod: Callable[[Mapping[str, Any]], None],
        on_gone: Callable[[], None],
    ) -> None:
        self._api = api
        self._on_pod = on_pod
        self._on_gone = on_gone
        self._last_status: dict[str, Any] | None = None
        self._last_conditions: list[Mapping[str, Any]] | None = None

    def write(self, pod: PodView, runtime: PodRuntime) -> dict[str, Any] | None:
        """The pod's status, written if it changed; None when it could not be written and
        the next tick should try again."""
        previous = self._last_conditions if self._last_conditions is not None else pod.conditions
        status = build_pod_status(pod, runtime, previous, utcnow())
        if status == self._last_status:
            return status
        body = {"metadata": {"resourceVersion": pod.resource_version}, "status": status}
        try:
            updated = self._api.patch_pod_status(pod.namespace, pod.name, body)
        except ApiException as error:
            if error.status == 409:
                # Someone else changed the pod since we saw it: look again, retry next tick.
                fresh = self._api.read_pod(pod.namespace, pod.name)
                if fresh is not None:
                    self._on_pod(fresh)
                return None
            if error.status == 404:
                self._on_gone()
                return None
            raise
        self._on_pod(updated)
        if self._last_status is None or status["phase"] != self._last_status.get("phase"):
            log.info("pod phase", extra=pod_fields(pod, phase=status["phase"]))
        self._last_status = status
        self._last_conditions = status["conditions"]
        return status
