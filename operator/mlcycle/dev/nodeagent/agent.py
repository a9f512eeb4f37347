"""The node agent's sync loop: register the Node, then watch the pods bound to it and hand
each to a pod worker, telling the worker whenever its pod changes or goes away.

Threads, not asyncio: everything below blocks (the client's watch, process supervision).
One thread keeps the Node's lease (`NodeHeartbeat`), one watches pods, and one worker per
pod (`podworker.PodWorker`) runs its containers and writes its status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from mlcycle.dev.nodeagent.config import AgentConfig
from mlcycle.dev.nodeagent.ipam import PodIpAllocator
from mlcycle.dev.nodeagent.kubeclient import Api
from mlcycle.dev.nodeagent.nodestatus import NodeHeartbeat
from mlcycle.dev.nodeagent.podworker import SHUTDOWN_GRACE_SECONDS, PodWorker, PodWorkerFactory

log = logging.getLogger("mlcycle.nodeagent")


class NodeAgent:
    def __init__(self, config: AgentConfig, api: Api, workers: PodWorkerFactory) -> None:
        self.config = config
        self.api = api
        self.workers = workers
        self.allocator = PodIpAllocator(config.pod_ip_prefix)
        self.stopping = threading.Event()
        self.heartbeat = NodeHeartbeat(config, api, self.stopping)
        self._workers: dict[str, PodWorker] = {}
        self._workers_lock = threading.Lock()

    def run(self) -> None:
        """Serve until `stopping` is set, then stop every pod's containers."""
        self.workers.clean_up()
        self.heartbeat.register()
        threads = [
            threading.Thread(target=self.heartbeat.run, name="heartbeat", daemon=True),
            threading.Thread(target=self._watch_pods, name="pod-watch", daemon=True),
        ]
        for thread in threads:
            thread.start()
        self.stopping.wait()
        self._shutdown()

    # -- pods --

    def _watch_pods(self) -> None:
        while not self.stopping.is_set():
            try:
                listing = self.api.list_pods(self.config.node_name)
                resource_version = listing["metadata"]["resourceVersion"]
                self._sync(listing.get("items") or [])
                while not self.stopping.is_set():
                    for event in self.api.watch_pods(self.config.node_name, resource_version):
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise ApiException(
                                status=obj.get("code", 500), reason=obj.get("message")
                            )
                        resource_version = obj.get("metadata", {}).get(
                            "resourceVersion", resource_version
                        )
                        if kind in ("ADDED", "MODIFIED"):
                            self._on_pod(obj)
                        elif kind == "DELETED":
                            self._on_pod_gone(obj.get("metadata", {}).get("uid", ""))
            except ApiException as error:
                if error.status == 410:
                    log.info("pod watch expired, listing again")
                    continue
                log.warning(
                    "pod watch failed",
                    extra={"status": error.status, "error": str(error.reason)},
                )
                self.stopping.wait(2)
            except Exception as error:
                log.warning("pod watch failed", extra={"error": str(error)})
                self.stopping.wait(2)

    def _sync(self, pods: list[dict[str, Any]]) -> None:
        listed = {p["metadata"]["uid"] for p in pods}
        with self._workers_lock:
            gone = [uid for uid in self._workers if uid not in listed]
        for uid in gone:
            self._on_pod_gone(uid)
        for pod in pods:
            self._on_pod(pod)

    def _on_pod(self, raw_pod: Mapping[str, Any]) -> None:
        metadata = raw_pod.get("metadata") or {}
        uid = metadata.get("uid", "")
        if (raw_pod.get("spec") or {}).get("nodeName") != self.config.node_name:
            return
        with self._workers_lock:
            worker = self._workers.get(uid)
            if worker is None:
                if self.stopping.is_set():
                    return
                reported_ip = (raw_pod.get("status") or {}).get("podIP", "")
                if not (reported_ip and self.allocator.reserve(uid, reported_ip)):
                    reported_ip = self.allocator.allocate(uid)
                worker = self.workers(raw_pod, reported_ip)
                self._workers[uid] = worker
                worker.start()
                return
        worker.observe(raw_pod)

    def _on_pod_gone(self, uid: str) -> None:
        with self._workers_lock:
            worker = self._workers.pop(uid, None)
            self.allocator.release(uid)
        if worker is not None:
            worker.vanish()

    def _shutdown(self) -> None:
        with self._workers_lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.shutdown()
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS + 5
        for worker in workers:
            worker.finished.wait(max(0.0, deadline - time.monotonic()))
        # Belt and braces for a worker stuck in an API call.
        for worker in workers:
            worker.force_stop()
        log.info("node agent stopped", extra={"pods": len(workers)})
