"""A running container's probes: which loops run, and what their results do to its slot
(started, ready, or marked for a kill), as the kubelet's prober manager decides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from mlcycle.dev.nodeagent.containers import ContainerSlot
from mlcycle.dev.nodeagent.podspec import ProbeSpec
from mlcycle.dev.nodeagent.probes import ProbeLoop, ProbeOutcome, check_once


def start_probes(
    slot: ContainerSlot,
    worker_name: str,
    pod_ip: str,
    base_env: Mapping[str, str],
    work_dir: str,
    wake: Callable[[], None],
) -> None:
    """Start the container's probe loops; each result updates the slot's flags, then calls
    `wake` so the worker acts on it at once."""
    spec = slot.spec
    cwd = spec.working_dir or work_dir

    def checker(probe: ProbeSpec) -> Callable[[], ProbeOutcome]:
        env = {**base_env, **slot.env}
        return lambda: check_once(probe, spec, pod_ip, env, cwd)

    def wake_after(
        update: Callable[[bool | None, str], None],
    ) -> Callable[[bool | None, str], None]:
        def on_result(passing: bool | None, message: str) -> None:
            update(passing, message)
            wake()

        return on_result

    def on_startup(passing: bool | None, message: str) -> None:
        if passing:
            slot.startup_passed = True
        elif passing is False:
            slot.liveness_failed = f"Startup probe failed: {message}"

    def on_readiness(passing: bool | None, _message: str) -> None:
        slot.readiness_passed = bool(passing)

    def on_liveness(passing: bool | None, message: str) -> None:
        if passing is False:
            slot.liveness_failed = f"Liveness probe failed: {message}"

    def started() -> bool:
        return slot.startup_passed

    loops = []
    name = f"{worker_name}/{spec.name}"
    if spec.startup_probe:
        loops.append(
            ProbeLoop(
                f"{name}/startup",
                spec.startup_probe,
                checker(spec.startup_probe),
                wake_after(on_startup),
                None,
            )
        )
    if spec.readiness_probe:
        loops.append(
            ProbeLoop(
                f"{name}/readiness",
                spec.readiness_probe,
                checker(spec.readiness_probe),
                wake_after(on_readiness),
                False,
                gate=started,
            )
        )
    if spec.liveness_probe:
        loops.append(
            ProbeLoop(
                f"{name}/liveness",
                spec.liveness_probe,
                checker(spec.liveness_probe),
                wake_after(on_liveness),
                True,
                gate=started,
            )
        )
    slot.probes = loops
    for loop in loops:
        loop.start()


def stop_probes(slot: ContainerSlot) -> None:
    for loop in slot.probes:
        loop.stop()
    slot.probes = []


def refresh_probe_flags(slot: ContainerSlot) -> None:
    if slot.record.state != "running":
        return
    started = slot.startup_passed
    ready = started and (slot.spec.readiness_probe is None or slot.readiness_passed)
    if slot.is_init:
        ready = False  # init containers never count as ready, as in the kubelet
    if slot.record.started != started or slot.record.ready != ready:
        slot.record = dataclasses.replace(slot.record, started=started, ready=ready)
    # The startup probe is done once it passed.
    if started and slot.spec.startup_probe:
        for loop in slot.probes:
            if loop.name.endswith("/startup"):
                loop.stop()
