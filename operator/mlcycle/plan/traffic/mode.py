"""The interface every traffic mode implements: what the rollout, the status and the
reconciler ask of the layer that splits requests between versions.

A mode is one module of `plan.traffic` holding one implementation of `TrafficMode`, listed
under its `spec.traffic.mode` value in `plan.traffic.TRAFFIC_MODES`; nothing else branches
on the mode's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from mlcycle.api.v1alpha1.inferenceservice import InferenceService, TrackStatus

if TYPE_CHECKING:
    from mlcycle.plan.inferenceservice.decision import RolloutPlan
    from mlcycle.plan.inferenceservice.observe import Observed


class TrafficMode(Protocol):
    """One way of splitting an InferenceService's requests between its versions."""

    @property
    def counts_requests(self) -> bool:
        """Whether the mode's own pods count each track's requests, mirrored ones apart, so
        the analysis reads them there; otherwise it reads each version's model servers,
        which count a mirrored request as a live one."""

    def children(
        self, isvc: InferenceService, plan: RolloutPlan, image: str
    ) -> list[dict[str, Any]]:
        """The objects that carry out the plan's `traffic_split`, once a stable exists."""

    def pod_split(self, isvc: InferenceService, full: int, share: int) -> tuple[int, int] | None:
        """`(stable, candidate)` replicas while a candidate at `share` percent rolls out,
        when the pods themselves are the split; None when the mode splits by weight and
        `rollout.capacity` sizes the versions."""

    def observed_weights(
        self, stable: TrackStatus | None, canary: TrackStatus | None
    ) -> tuple[TrackStatus | None, TrackStatus | None]:
        """The tracks (with their ready replicas) carrying the weights the status reports."""

    def entry_ready(self, observed: Observed) -> bool:
        """Whether what clients call can answer, whatever the model servers' readiness."""

    def url(self, isvc: InferenceService) -> str | None:
        """Where clients call (`status.url`); None when the mode cannot tell."""

    def traffic_message(
        self, isvc: InferenceService, observed: Observed, stable: TrackStatus | None, serving: bool
    ) -> str:
        """The message of the TrafficAvailable condition (`serving`: its status)."""


def served_through(entry: str, stable: TrackStatus | None, serving: bool) -> str:
    """TrafficAvailable's message when clients call `entry`, which has no pods of its own."""
    version = stable.version if stable else "?"
    ready = stable.ready_replicas or 0 if stable else 0
    if serving:
        return f"version {version} answers requests through {entry}"
    return f"{ready} stable pods ready behind {entry}"
