"""The pod worker that runs each of a pod's containers as a local process group.

Threads, not asyncio: process supervision is blocking by nature (Popen, /proc, probes), and
PR_SET_PDEATHSIG ties a child's life to the thread that forked it, which a long-lived
thread per pod gives naturally. One `ProcessPodWorker` thread per pod starts and
supervises its containers and writes its status; probe loops run on threads of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any

from mlcycle.dev.nodeagent import containerstatus, envvars
from mlcycle.dev.nodeagent.config import HOST_IP, AgentConfig
from mlcycle.dev.nodeagent.containerenv import container_env
from mlcycle.dev.nodeagent.containers import PID_FILE, TERMINATION_MESSAGE_FILE, ContainerSlot
from mlcycle.dev.nodeagent.containerstatus import Terminated, recovered_record
from mlcycle.dev.nodeagent.envvars import ContainerConfigError, ContainerCreateError
from mlcycle.dev.nodeagent.exits import TERMINATION_MESSAGE_ENV
from mlcycle.dev.nodeagent.kubeclient import Api
from mlcycle.dev.nodeagent.podspec import PodView, parse_pod
from mlcycle.dev.nodeagent.podstatus import PodRuntime
from mlcycle.dev.nodeagent.podworker import SHUTDOWN_GRACE_SECONDS, is_older, pod_fields
from mlcycle.dev.nodeagent.probemanager import refresh_probe_flags, start_probes, stop_probes
from mlcycle.dev.nodeagent.process import (
    MemorySampler,
    group_alive,
    kill_recorded_groups,
    remove_pid_file,
    signal_group,
    start_process,
    write_pid_file,
)
from mlcycle.dev.nodeagent.statusmanager import PodStatusWriter
from mlcycle.dev.nodeagent.timestamps import parse_time, utcnow

log = logging.getLogger("mlcycle.nodeagent")

ACTIVE_TICK_SECONDS = 0.5
IDLE_TICK_SECONDS = 5.0
CONFIG_RETRY_SECONDS = 2.0
CREATE_RETRY_SECONDS = 10.0


class ProcessNode:
    """This machine as its process-based pod workers share it (the agent's config, the
    API, one memory sampler, the service variables); called with a pod, it makes the
    pod's worker."""

    def __init__(self, config: AgentConfig, api: Api) -> None:
        self.config = config
        self.api = api
        self.memory = MemorySampler()
        self.service_env = envvars.service_env(config.apiserver_host, config.apiserver_port)

    def clean_up(self) -> None:
        self.config.pods_dir.mkdir(parents=True, exist_ok=True)
        leftovers = kill_recorded_groups(self.config.pods_dir, PID_FILE)
        if leftovers:
            log.info("killed processes left by a previous agent", extra={"pids": leftovers})

    def __call__(self, raw_pod: Mapping[str, Any], pod_ip: str) -> ProcessPodWorker:
        return ProcessPodWorker(self, raw_pod, pod_ip)


class ProcessPodWorker(threading.Thread):
    def __init__(self, node: ProcessNode, raw_pod: Mapping[str, Any], pod_ip: str) -> None:
        pod = parse_pod(raw_pod)
        super().__init__(name=f"pod-{pod.namespace}/{pod.name}", daemon=True)
        self.node = node
        self.uid = pod.uid
        self.pod_ip = pod_ip
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._vanished = False
        self._shutting_down = False
        self._terminating = False
        self._terminal = False
        self.finished = threading.Event()
        self._status_writer = PodStatusWriter(node.api, self.observe, self.vanish)
        self.start_time = parse_time(pod.start_time) or utcnow()
        self.directory = node.config.pods_dir / f"{pod.namespace}_{pod.name}_{pod.uid}"
        now = utcnow()
        init_reported = {s.get("name"): s for s in pod.init_container_statuses}
        reported = {s.get("name"): s for s in pod.container_statuses}
        self.init_slots = [
            ContainerSlot(
                spec=spec,
                is_init=True,
                record=recovered_record(spec, init_reported.get(spec.name), now),
                directory=self.directory / spec.name,
            )
            for spec in pod.init_containers
        ]
        self.slots = [
            ContainerSlot(
                spec=spec,
                is_init=False,
                record=recovered_record(spec, reported.get(spec.name), now),
                directory=self.directory / spec.name,
            )
            for spec in pod.containers
        ]
        if pod.init_containers and not all(s.succeeded for s in self.init_slots):
            for slot in self.slots:
                if slot.record.state == "waiting" and not slot.record.last_terminated:
                    slot.record = slot.record.waiting(containerstatus.REASON_POD_INITIALIZING)
        # A pod that ended under a previous agent stays ended; others resume, and containers
        # the previous agent saw exit (or lost) go through the restart policy again.
        self._pod_finished = pod.is_terminal
        for slot in (*self.init_slots, *self.slots):
            if slot.record.state == "terminated":
                slot.decide_after_exit(self.pod, self._pod_finished, time.monotonic())

    # -- called from other threads --

    def observe(self, raw_pod: Mapping[str, Any]) -> None:
        pod = parse_pod(raw_pod)
        with self._lock:
            if not is_older(pod.resource_version, self._pod.resource_version):
                self._pod = pod
        self._wake.set()

    def vanish(self) -> None:
        self._vanished = True
        self._wake.set()

    def shutdown(self) -> None:
        self._shutting_down = True
        self._wake.set()

    def force_stop(self) -> None:
        # For a worker stuck in an API call: its process groups still go.
        for pgid in [s.process.pid for s in self._all_slots() if s.process]:
            if group_alive(pgid):
                signal_group(pgid, signal.SIGKILL)

    # -- the worker thread --

    @property
    def pod(self) -> PodView:
        with self._lock:
            return self._pod

    def _fields(self, slot: ContainerSlot | None = None, **extra: object) -> dict[str, object]:
        return pod_fields(self.pod, slot.spec.name if slot is not None else None, **extra)

    def run(self) -> None:
        log.info("pod accepted", extra=self._fields(pod_ip=self.pod_ip))
        try:
            while True:
                if self._vanished or self._shutting_down:
                    self._stop_everything(
                        grace=SHUTDOWN_GRACE_SECONDS if self._shutting_down else 0.0
                    )
                    return
                try:
                    self._tick()
                except Exception:
                    log.exception("pod tick failed", extra=self._fields())
                if self.finished.is_set():
                    # Deletion done; only the watch's DELETED (or a relist) remains.
                    self._wake.wait()
                    self._wake.clear()
                    continue
                self._wake.wait(ACTIVE_TICK_SECONDS if self._active() else IDLE_TICK_SECONDS)
                self._wake.clear()
        finally:
            self.finished.set()

    def _all_slots(self) -> list[ContainerSlot]:
        return [*self.init_slots, *self.slots]

    def _active(self) -> bool:
        return self._terminating or any(
            s.process is not None or (not s.final and s.record.state != "terminated")
            for s in self._all_slots()
        )

    def _tick(self) -> None:
        pod = self.pod
        now = time.monotonic()
        for slot in self._all_slots():
            if slot.process is not None and slot.process.poll() is not None:
                self._on_exit(slot)
            if slot.process is not None and slot.kill_at is not None and now >= slot.kill_at:
                signal_group(slot.process.pid, signal.SIGKILL)

        if pod.deletion_timestamp and not self._terminating:
            self._begin_termination(pod)
        if self._terminating:
            if not any(s.process for s in self._all_slots()):
                self._terminal = True
                self._write_status()
                self.node.api.delete_pod_now(pod.namespace, pod.name, pod.uid)
                log.info("pod deleted", extra=self._fields())
                self.finished.set()
                return
            self._write_status()
            return

        self._enforce_memory_limits()
        self._restart_failed_liveness(now)
        if not self._pod_finished:
            self._start_due_containers(now)
        for slot in self._all_slots():
            refresh_probe_flags(slot)
        status = self._write_status()
        if status is not None and status["phase"] in ("Succeeded", "Failed"):
            self._pod_finished = True

    # -- starting --

    def _start_due_containers(self, now: float) -> None:
        for slot in self.init_slots:
            if slot.succeeded:
                continue
            if slot.final:
                return  # a failed init container of a pod that never restarts
            if slot.process is None and now >= slot.next_start_at:
                self._start(slot, now)
            return  # init containers run one at a time, in order
        for slot in self.slots:
            due = now >= slot.next_start_at and not slot.final
            if due and slot.record.state == "waiting" and slot.process is None:
                self._start(slot, now)

    def _start(self, slot: ContainerSlot, now: float) -> None:
        pod = self.pod
        try:
            env = container_env(
                self.node.api,
                self.node.config,
                self.node.service_env,
                pod,
                slot.spec,
                self.pod_ip,
                self.directory,
            )
            argv = envvars.build_argv(slot.spec, env)
        except ContainerConfigError as error:
            slot.record = slot.record.waiting(
                containerstatus.REASON_CREATE_CONTAINER_CONFIG_ERROR, str(error)
            )
            slot.next_start_at = now + CONFIG_RETRY_SECONDS
            return
        except (ContainerCreateError, ValueError) as error:
            slot.record = slot.record.waiting(
                containerstatus.REASON_CREATE_CONTAINER_ERROR, str(error)
            )
            slot.next_start_at = now + CREATE_RETRY_SECONDS
            return

        has_run_before = slot.record.terminated is not None or slot.record.last_terminated
        restart_count = slot.record.restart_count + (1 if has_run_before else 0)
        slot.record = dataclasses.replace(slot.record, restart_count=restart_count)
        message_file = slot.directory / TERMINATION_MESSAGE_FILE
        remove_pid_file(message_file)
        slot.env = {**env, TERMINATION_MESSAGE_ENV: str(message_file)}
        process_env = {**self.node.config.base_process_env(), **slot.env}
        log_path = slot.directory / f"{restart_count}.log"
        started_at = utcnow()
        slot.oom_killed = False
        slot.kill_at = None
        slot.kill_message = ""
        slot.liveness_failed = ""
        slot.startup_passed = slot.spec.startup_probe is None
        slot.readiness_passed = False
        try:
            process = start_process(
                argv, process_env, slot.spec.working_dir or self.node.config.work_dir, log_path
            )
        except OSError as error:
            # What containerd reports when the entrypoint cannot be executed.
            slot.record = slot.record.running(started_at, "").exited(
                Terminated(
                    exit_code=128,
                    reason=containerstatus.REASON_START_ERROR,
                    message=f"failed to start {argv[0]!r}: {error}",
                    started_at=started_at,
                    finished_at=started_at,
                )
            )
            log.warning("container failed to start", extra=self._fields(slot, error=str(error)))
            slot.decide_after_exit(self.pod, self._pod_finished, now)
            return
        slot.process = process
        slot.started_monotonic = now
        write_pid_file(slot.directory / PID_FILE, process.pid)
        slot.record = slot.record.running(started_at, f"local://{process.pid}")
        log.info(
            "container started",
            extra=self._fields(
                slot, pid=process.pid, restart_count=restart_count, log=str(log_path)
            ),
        )
        start_probes(
            slot,
            self.name,
            self.pod_ip,
            self.node.config.base_process_env(),
            self.node.config.work_dir,
            self._wake.set,
        )

    # -- kills --

    def _restart_failed_liveness(self, now: float) -> None:
        for slot in self._all_slots():
            if slot.process is not None and slot.liveness_failed and slot.kill_at is None:
                log.info("killing container", extra=self._fields(slot, reason=slot.liveness_failed))
                slot.kill_message = slot.liveness_failed
                signal_group(slot.process.pid, signal.SIGTERM)
                slot.kill_at = now + self.pod.grace_period_seconds

    def _enforce_memory_limits(self) -> None:
        # There are no cgroups for local processes, so the limit is enforced by sampling
        # the process group's RSS and killing it like the kernel's OOM killer would.
        for slot in self._all_slots():
            limit = slot.spec.memory_limit_bytes
            if slot.process is None or limit is None or slot.oom_killed:
                continue
            rss = self.node.memory.rss_of_group(slot.process.pid)
            if rss > limit:
                slot.oom_killed = True
                signal_group(slot.process.pid, signal.SIGKILL)
                log.info(
                    "container over memory limit", extra=self._fields(slot, rss=rss, limit=limit)
                )

    def _on_exit(self, slot: ContainerSlot) -> None:
        assert slot.process is not None
        returncode = slot.process.returncode
        pid = slot.process.pid
        # Whatever the leader left in its group dies with it, as in a container.
        signal_group(pid, signal.SIGKILL)
        slot.process = None
        stop_probes(slot)
        remove_pid_file(slot.directory / PID_FILE)
        terminated = slot.termination(returncode)
        slot.record = slot.record.exited(terminated)
        log.info(
            "container exited",
            extra=self._fields(slot, exit_code=terminated.exit_code, reason=terminated.reason),
        )
        if not self._terminating:
            slot.decide_after_exit(self.pod, self._pod_finished, time.monotonic())

    # -- deletion and shutdown --

    def _begin_termination(self, pod: PodView) -> None:
        self._terminating = True
        grace = pod.grace_period_seconds
        log.info("pod deletion requested", extra=self._fields(grace_seconds=grace))
        deadline = time.monotonic() + grace
        for slot in self._all_slots():
            stop_probes(slot)
            slot.final = True
            if slot.process is not None:
                signal_group(slot.process.pid, signal.SIGTERM)
                slot.kill_at = deadline
            elif slot.record.state == "waiting":
                # Never ran or waiting for a restart: nothing to stop, but it is over.
                last = slot.record.last_terminated
                if last is not None:
                    slot.record = dataclasses.replace(
                        slot.record, state="terminated", terminated=last
                    )

    def _stop_everything(self, grace: float) -> None:
        running = [s for s in self._all_slots() if s.process is not None]
        for slot in running:
            stop_probes(slot)
            assert slot.process is not None
            signal_group(slot.process.pid, signal.SIGTERM if grace else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for slot in running:
            assert slot.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                slot.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            signal_group(slot.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                slot.process.wait(timeout=2)
                remove_pid_file(slot.directory / PID_FILE)
        log.info("pod processes stopped", extra=self._fields(count=len(running)))

    def _write_status(self) -> dict[str, Any] | None:
        runtime = PodRuntime(
            pod_ip=self.pod_ip,
            host_ip=HOST_IP,
            start_time=self.start_time,
            init_records=tuple(s.record for s in self.init_slots),
            records=tuple(s.record for s in self.slots),
            terminal=self._terminal,
        )
        return self._status_writer.write(self.pod, runtime)
