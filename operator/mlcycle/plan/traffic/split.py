"""The split the rollout asks of the traffic layer: which version gets which share of the
requests at the current step of the rollout strategy.

Decided from the rollout's tracks alone (`RolloutPlan.stable` and `.canary`) and carried
out alike by every traffic mode. The rollout imports the traffic modes, so the plan is
imported here for its type only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlcycle.api.v1alpha1.inferenceservice import InferenceService, TrackStatus

if TYPE_CHECKING:
    from mlcycle.plan.inferenceservice.decision import RolloutPlan


@dataclass(frozen=True)
class TrafficSplit:
    """How requests are split at this point of the rollout, whatever carries it out (the
    router's configuration, the HTTPRoute), so two modes never disagree on a step."""

    stable: str | None
    canary: str | None = None
    canary_weight: int = 0
    """The candidate's percent of requests not pinned by the header."""
    pin_header: tuple[str, str | None] | None = None
    """ABTest: (header, value) sending requests to the candidate; value None for any."""
    mirror_percent: int = 0
    """Shadow: the percent of requests copied to the candidate."""


def strategy_weight(isvc: InferenceService, step: int) -> int:
    """The candidate's live weight at `step`."""
    rollout = isvc.spec.rollout
    if rollout.strategy == "Canary":
        return rollout.steps[min(step, len(rollout.steps) - 1)]
    if rollout.strategy == "ABTest" and rollout.ab_test is not None:
        return rollout.ab_test.weight
    return 0


def mirror_percent(isvc: InferenceService, canary: TrackStatus | None) -> int:
    """Shadow: the share of requests mirrored to the candidate at its step."""
    if canary is None or isvc.spec.rollout.strategy != "Shadow":
        return 0
    if canary.step_started_at is None:
        return 0
    steps = isvc.spec.rollout.steps
    return steps[min(canary.step or 0, len(steps) - 1)]


def traffic_split(isvc: InferenceService, plan: RolloutPlan) -> TrafficSplit:
    """The candidate gets traffic only once its step has started (it is ready)."""
    stable = plan.stable.version if plan.stable is not None else None
    canary = plan.canary
    if canary is None or canary.version is None:
        return TrafficSplit(stable)
    if canary.step_started_at is None:
        return TrafficSplit(stable, canary.version)
    ab = isvc.spec.rollout.ab_test
    pin = (
        (ab.header_name, ab.header_value)
        if isvc.spec.rollout.strategy == "ABTest" and ab is not None
        else None
    )
    return TrafficSplit(
        stable,
        canary.version,
        canary_weight=canary.weight or 0,
        pin_header=pin,
        mirror_percent=mirror_percent(isvc, canary),
    )
