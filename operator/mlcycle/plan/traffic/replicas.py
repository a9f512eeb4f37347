"""replicas traffic mode: a split by replica counts on one Service, with no router or mesh.

One Service selects the model-server pods of both tracks (`model_server_selector`); with
requests spread evenly over ready endpoints, each track's share is its share of the ready
pods. Weights are therefore coarse (with 4 replicas, steps of 20-25%), and the status
reports the weight the ready pods give (`effective_weight`), not the one asked for.

Pure: the Service is a camelCase dict for server-side apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from mlcycle.api.v1alpha1.inferenceservice import InferenceService, TrackStatus
from mlcycle.plan.serving_names import (
    TRAFFIC_COMPONENT,
    child_labels,
    child_metadata,
    child_name,
    cluster_url,
    model_server_selector,
    service_ports,
)
from mlcycle.plan.traffic.mode import served_through

if TYPE_CHECKING:
    from mlcycle.plan.inferenceservice.decision import RolloutPlan
    from mlcycle.plan.inferenceservice.observe import Observed

Capacity = Literal["neutral", "surge"]


def replica_split(
    total: int, canary_percent: int, *, capacity: Capacity, stable_replicas: int
) -> tuple[int, int]:
    """`(stable, canary)` replica counts that put about `canary_percent` of requests on the
    candidate.

    `total` is the replica count the service runs with (`spec.server.replicas`);
    `stable_replicas` is the stable's count now.

    - neutral: stable + canary = total, the stable shrinking as the candidate grows (a
      fixed GPU budget). While 0 < percent < 100 each track keeps at least one replica,
      so a total of 1 runs 2 pods during the rollout: a candidate alone would take 100%.
    - surge: the stable keeps `stable_replicas` until promotion; the candidate is added
      beside it, at most `total` replicas (one full copy of the service).

    A candidate at more than 0% always gets at least one replica; at 100% the stable has
    none (the candidate serves everything, the promoted state).
    """
    if total < 0 or stable_replicas < 0:
        raise ValueError(f"replica counts must not be negative: {total=}, {stable_replicas=}")
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent {canary_percent} is not a percent in [0, 100]")
    if canary_percent == 0:
        return (total if capacity == "neutral" else stable_replicas, 0)
    if canary_percent == 100 or total == 0:
        return 0, total
    if capacity == "neutral":
        total_during_rollout = max(total, 2)
        canary = _round_half_up(total_during_rollout * canary_percent, 100)
        canary = min(max(canary, 1), total_during_rollout - 1)
        return total_during_rollout - canary, canary
    # canary / (stable + canary) = percent  <=>  canary = stable * percent / (100 - percent)
    canary = _round_half_up(stable_replicas * canary_percent, 100 - canary_percent)
    return stable_replicas, min(max(canary, 1), total)


def effective_weight(stable_ready: int, canary_ready: int) -> int:
    """The candidate's percent of requests that its share of the ready pods gives.

    Never 0 while a ready candidate pod answers, never 100 while a ready stable one does:
    the status must not claim a track gets no traffic when it gets a little.
    """
    ready = stable_ready + canary_ready
    if canary_ready <= 0 or ready <= 0:
        return 0
    if stable_ready <= 0:
        return 100
    return min(max(_round_half_up(100 * canary_ready, ready), 1), 99)


def shared_service_name(isvc: InferenceService) -> str:
    return child_name(isvc)


def desired_shared_service(isvc: InferenceService) -> dict[str, Any]:
    """The Service clients call in replicas mode: it selects both tracks' ready pods, on
    the model servers' named port, as each version's own Service does."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(
            isvc, shared_service_name(isvc), child_labels(isvc, TRAFFIC_COMPONENT)
        ),
        "spec": {
            "selector": model_server_selector(isvc),
            "ports": service_ports(),
        },
    }


class ReplicasMode:
    """`traffic.mode: replicas`."""

    counts_requests = False

    def children(
        self, isvc: InferenceService, plan: RolloutPlan, image: str
    ) -> list[dict[str, Any]]:
        # The split is the replica counts (`pod_split`): the layer itself is only the Service.
        return [desired_shared_service(isvc)]

    def pod_split(self, isvc: InferenceService, full: int, share: int) -> tuple[int, int] | None:
        # The pods are the split: a ready candidate pod takes its share at once, so the
        # candidate starts at the first step's share rather than waiting at 0%.
        return replica_split(full, share, capacity=isvc.spec.rollout.capacity, stable_replicas=full)

    def observed_weights(
        self, stable: TrackStatus | None, canary: TrackStatus | None
    ) -> tuple[TrackStatus | None, TrackStatus | None]:
        """The weights the ready pods give, not the ones asked for."""
        if stable is None or canary is None:
            return stable, canary
        weight = effective_weight(stable.ready_replicas or 0, canary.ready_replicas or 0)
        return (
            stable.model_copy(update={"weight": 100 - weight}),
            canary.model_copy(update={"weight": weight}),
        )

    def entry_ready(self, observed: Observed) -> bool:
        return True  # a Service has no readiness of its own: the stable's pods decide

    def url(self, isvc: InferenceService) -> str | None:
        return cluster_url(isvc)

    def traffic_message(
        self, isvc: InferenceService, observed: Observed, stable: TrackStatus | None, serving: bool
    ) -> str:
        return served_through(f"Service {shared_service_name(isvc)}", stable, serving)


def _round_half_up(numerator: int, denominator: int) -> int:
    # Python's round() rounds halves to even: 2.5 replicas would become 2 but 3.5 become 4.
    return (2 * numerator + denominator) // (2 * denominator)
