"""The pod worker: what the agent asks of whatever runs one pod's containers.

The agent makes one worker per pod bound to its Node through a `PodWorkerFactory`, and
from then on only tells it what it saw: a newer version of the pod, the pod gone, the
agent stopping. The worker starts, supervises and stops the pod's containers and writes
the pod's status. `ProcessPodWorker` runs each container as a local process group; a
worker that reports its pods Running without starting anything (to load the control
plane with many pods) would be one more class behind the same two Protocols.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from mlcycle.dev.nodeagent.podspec import PodView

# How long containers get to stop on SIGTERM when the agent itself stops.
SHUTDOWN_GRACE_SECONDS = 2.0


class PodWorker(Protocol):
    finished: threading.Event
    """Set when the worker is done with its pod: deleted, or stopped with the agent."""

    def start(self) -> None:
        """Begin running the pod (on a thread of the worker's own)."""

    def observe(self, raw_pod: Mapping[str, Any]) -> None:
        """The pod as the API has it now (from the watch, a relist or a status write)."""

    def vanish(self) -> None:
        """The pod is gone from the API: stop its containers at once."""

    def shutdown(self) -> None:
        """The agent is stopping: stop the containers within SHUTDOWN_GRACE_SECONDS."""

    def force_stop(self) -> None:
        """The last resort once shutdown's grace is over: kill whatever still runs."""


class PodWorkerFactory(Protocol):
    def clean_up(self) -> None:
        """Before the first pod: stop whatever a previous agent on this node left running."""

    def __call__(self, raw_pod: Mapping[str, Any], pod_ip: str) -> PodWorker:
        """The worker of one pod, given the IP the pod gets; not started yet."""


def is_older(resource_version: str, than: str) -> bool:
    """Whether a pod seen from the watch is staler than one from a PATCH response; the
    two race. Resource versions are opaque, but etcd's are increasing integers."""
    if resource_version.isdigit() and than.isdigit():
        return int(resource_version) < int(than)
    return False


def pod_fields(pod: PodView, container: str | None = None, **extra: object) -> dict[str, object]:
    """The fields that name a pod (and one of its containers) in a log line."""
    fields: dict[str, object] = {"namespace": pod.namespace, "pod": pod.name, "uid": pod.uid}
    if container is not None:
        fields["container"] = container
    return {**fields, **extra}
