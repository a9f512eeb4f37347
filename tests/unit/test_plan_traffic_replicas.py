"""replicas mode: replica counts for each step, the weight ready pods give, the shared
Service."""

from __future__ import annotations

import pytest

from mlcycle.plan.serving_names import model_server_selector
from mlcycle.plan.traffic.replicas import (
    Capacity,
    desired_shared_service,
    effective_weight,
    replica_split,
)
from tests.builders import an_inference_service

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("total", "percent", "capacity", "stable_now", "expected"),
    [
        # neutral: the total holds, the stable shrinks as the candidate grows
        (10, 0, "neutral", 10, (10, 0)),
        (10, 10, "neutral", 10, (9, 1)),
        (10, 25, "neutral", 9, (7, 3)),  # 2.5 rounds up, never to even
        (10, 50, "neutral", 7, (5, 5)),
        (10, 100, "neutral", 5, (0, 10)),
        (4, 10, "neutral", 4, (3, 1)),  # 0.4 replicas: a candidate at >0% gets one
        (4, 95, "neutral", 4, (1, 3)),  # the stable keeps one until 100%
        (1, 10, "neutral", 1, (1, 1)),  # one replica cannot split: the rollout runs two
        (1, 100, "neutral", 1, (0, 1)),
        (0, 50, "neutral", 0, (0, 0)),
        # surge: the stable keeps its count, the candidate is added beside it
        (4, 0, "surge", 4, (4, 0)),
        (4, 10, "surge", 4, (4, 1)),
        (4, 25, "surge", 4, (4, 1)),  # 1.33 rounds to 1: 20% on the candidate
        (4, 50, "surge", 4, (4, 4)),
        (4, 75, "surge", 4, (4, 4)),  # 12 wanted; at most one full copy of the service
        (6, 25, "surge", 3, (3, 1)),  # the stable's count now, not the total, sets the ratio
        (4, 100, "surge", 4, (0, 4)),
        (1, 10, "surge", 1, (1, 1)),
    ],
)
def test_replica_split(
    total: int,
    percent: int,
    capacity: Capacity,
    stable_now: int,
    expected: tuple[int, int],
) -> None:
    assert replica_split(total, percent, capacity=capacity, stable_replicas=stable_now) == expected


@pytest.mark.parametrize("capacity", ["neutral", "surge"])
@pytest.mark.parametrize("percent", range(1, 100))
def test_a_candidate_between_0_and_100_percent_always_shares_with_the_stable(
    capacity: Capacity, percent: int
) -> None:
    stable, canary = replica_split(5, percent, capacity=capacity, stable_replicas=5)
    assert canary >= 1
    assert stable >= 1
    if capacity == "neutral":
        assert stable + canary == 5


@pytest.mark.parametrize(
    ("total", "percent", "stable_now"),
    [(-1, 10, 1), (1, -1, 1), (1, 101, 1), (1, 10, -2)],
)
def test_impossible_arguments_are_refused(total: int, percent: int, stable_now: int) -> None:
    with pytest.raises(ValueError, match=r"negative|not a percent"):
        replica_split(total, percent, capacity="neutral", stable_replicas=stable_now)


@pytest.mark.parametrize(
    ("stable_ready", "canary_ready", "weight"),
    [
        (0, 0, 0),
        (4, 0, 0),
        (0, 3, 100),
        (1, 1, 50),
        (3, 1, 25),
        (7, 3, 30),
        (2, 1, 33),
        (1, 2, 67),
        (7, 1, 13),  # 12.5 rounds up
        (300, 1, 1),  # 0.33%: a ready candidate gets some traffic, never reported as 0
        (1, 300, 99),
    ],
)
def test_effective_weight(stable_ready: int, canary_ready: int, weight: int) -> None:
    assert effective_weight(stable_ready, canary_ready) == weight


def test_shared_service_selects_both_tracks() -> None:
    isvc = (
        an_inference_service("iris", namespace="team-a")
        .uid("uid-9")
        .model("iris", version=3)
        .traffic("replicas")
        .obj()
    )
    service = desired_shared_service(isvc)
    assert service["metadata"]["name"] == "iris"
    assert service["metadata"]["namespace"] == "team-a"
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-9"
    assert service["spec"]["selector"] == {
        "mlcycle.dev/inferenceservice-uid": "uid-9",
        "app.kubernetes.io/component": "model-server",
    }
    # Both tracks' pods carry the selector; the track label is not part of it.
    assert service["spec"]["selector"] == model_server_selector(isvc)
    assert "mlcycle.dev/track" not in service["spec"]["selector"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": 8081,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]
