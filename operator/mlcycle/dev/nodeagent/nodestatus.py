"""The Node: register it, keep its Lease renewed, and report its conditions and capacity."""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from mlcycle.dev.nodeagent.config import HOST_IP, AgentConfig
from mlcycle.dev.nodeagent.kubeclient import Api
from mlcycle.dev.nodeagent.timestamps import format_time, utcnow

log = logging.getLogger("mlcycle.nodeagent")

LEASE_RENEW_SECONDS = 10.0
# The node lifecycle controller trusts the lease; the Node's own heartbeat only needs to
# move now and then so `kubectl describe node` does not look stale.
NODE_STATUS_REFRESH_SECONDS = 60.0


def node_conditions(
    now: datetime.datetime, previous: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    wanted = [
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ]
    conditions = []
    for kind, status, reason, message in wanted:
        old = before.get(kind, {})
        transition = old.get("lastTransitionTime") if old.get("status") == status else None
        conditions.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": format_time(now),
                "lastTransitionTime": transition or format_time(now),
            }
        )
    return conditions


def desired_node_status(
    config: AgentConfig, kubelet_version: str, previous: Mapping[str, Any], now: datetime.datetime
) -> dict[str, Any]:
    """The Node's status; capacity keys the node no longer has are nulled so a merge patch
    removes them (an extended resource dropped between runs)."""
    stale = set(previous.get("capacity") or {}) - set(config.capacity)
    resources: dict[str, str | None] = {**dict.fromkeys(stale), **config.capacity}
    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": node_conditions(now, list(previous.get("conditions") or [])),
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": config.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "containerRuntimeVersion": "mlcycle-local://0",
            "osImage": "mlcycle local node agent",
            "kernelVersion": os.uname().release,
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        },
    }


def node_labels(node_name: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "mlcycle.dev/local-node-agent": "true",
    }


class NodeHeartbeat:
    """Registers the Node, then (in `run`, on a thread of its own) renews its Lease and now
    and then its status, registering it again if someone deleted it."""

    def __init__(self, config: AgentConfig, api: Api, stopping: threading.Event) -> None:
        self.config = config
        self.api = api
        self.stopping = stopping
        self._node: dict[str, Any] = {}
        self._kubelet_version = ""

    def register(self) -> None:
        while not self.stopping.is_set():
            try:
                self._kubelet_version = self.api.server_version()
                existing = self.api.read_node(self.config.node_name)
                if existing is None:
                    existing = self.api.create_node(
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": {
                                "name": self.config.node_name,
                                "labels": node_labels(self.config.node_name),
                            },
                        }
                    )
                    log.info("node registered", extra={"node": self.config.node_name})
                else:
                    self.api.patch_node(
                        self.config.node_name,
                        {"metadata": {"labels": node_labels(self.config.node_name)}},
                    )
                self._node = self._patch_node_status(existing)
                self.api.renew_lease(self._node, utcnow())
                log.info(
                    "node ready",
                    extra={"node": self.config.node_name, "capacity": dict(self.config.capacity)},
                )
                return
            except Exception as error:  # the apiserver may still be starting
                log.warning("node registration failed, retrying", extra={"error": str(error)})
                self.stopping.wait(2)

    def _patch_node_status(self, node: Mapping[str, Any]) -> dict[str, Any]:
        status = desired_node_status(
            self.config, self._kubelet_version, node.get("status") or {}, utcnow()
        )
        return self.api.patch_node_status(self.config.node_name, {"status": status})

    def run(self) -> None:
        last_status_refresh = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW_SECONDS):
            try:
                if time.monotonic() - last_status_refresh >= NODE_STATUS_REFRESH_SECONDS:
                    current = self.api.read_node(self.config.node_name)
                    if current is None:
                        log.warning("node was deleted, registering again")
                        self.register()
                        current = self._node
                    self._node = self._patch_node_status(current)
                    last_status_refresh = time.monotonic()
                self.api.renew_lease(self._node, utcnow())
            except Exception as error:
                log.warning("heartbeat failed", extra={"error": str(error)})
