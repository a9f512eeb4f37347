"""InferenceService planning: the rollout state machine on an injected clock, replica
maths, model resolution from a ModelVersion, router mode's children, and status."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from mlcycle.api.routerconfig import RouterConfig
from mlcycle.api.v1alpha1 import InferenceService
from mlcycle.api.v1alpha1.inferenceservice import (
    CounterSample,
    InferenceServiceStatus,
    TrackStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.inferenceservice.decision import RolloutPlan
from mlcycle.plan.inferenceservice.observe import Observed
from mlcycle.plan.inferenceservice.resolve import (
    Blocked,
    Target,
    approval_gate,
    target_from_model_version,
)
from mlcycle.plan.inferenceservice.rollout import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    plan_rollout,
)
from mlcycle.plan.inferenceservice.servers import (
    desired_replicas,
    server_children,
    stale_server_children,
)
from mlcycle.plan.inferenceservice.status import status_plan
from mlcycle.plan.inferenceservice.steps import analysis_due
from mlcycle.plan.status_diff import merge_patch
from mlcycle.plan.traffic.router import router_children, router_config
from tests.builders import NOW, a_model_version, an_inference_service, canary_track

pytestmark = pytest.mark.unit

MODEL = "iris"


def _at(seconds: float) -> datetime.datetime:
    return NOW + datetime.timedelta(seconds=seconds)


ISVC = (
    an_inference_service("iris", namespace="team-a")
    .generation(2)
    .model(MODEL, version=2)
    .steps(10, 50, interval="1m")
    .analysis(min_requests=10, success_rate_min=0.95, failure_threshold=2)
    .promote_alias("champion")
)
"""Version 2 of the model wanted, rolled out in two steps behind a 95 % success rate."""


def _sample(requests: float, errors: float = 0) -> CounterSample:
    return CounterSample(
        requests=requests, errors=errors, latency_buckets={"0.05": requests, "+Inf": requests}
    )


def _observed(
    version: str = "2",
    ready: dict[str, int] | None = None,
    sample: CounterSample | None = None,
) -> Observed:
    return Observed(
        target=Target(MODEL, version),
        ready_replicas=ready if ready is not None else {"1": 1, "2": 1},
        router_ready=1,
        canary_sample=sample,
    )


def _step(isvc: InferenceService, observed: Observed, seconds: float) -> InferenceService:
    """One pass and the status it writes, as the next pass will read it."""
    plan = plan_rollout(isvc, observed, _at(seconds))
    written = status_plan(isvc, observed, plan, _at(seconds))
    before = (
        isvc.status.model_dump(mode="json", by_alias=True, exclude_none=True) if isvc.status else {}
    )
    merged = _apply_merge_patch(before, written.status)
    return isvc.model_copy(update={"status": InferenceServiceStatus.model_validate(merged)})


def _apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _apply_merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- The state machine ----------------------------------------------------------------------


def test_first_version_is_deployed_then_ready() -> None:
    isvc = ISVC.model(MODEL, version=1).obj()
    plan = plan_rollout(isvc, _observed("1", ready={}), NOW)
    assert plan.stable is not None
    assert (plan.stable.version, plan.stable.weight) == ("1", 100)
    assert plan.canary is None
    assert plan.phase == "Progressing"
    assert [e.reason for e in plan.events] == [reasons.DEPLOYING]
    isvc = _step(isvc, _observed("1", ready={}), 0)
    assert plan_rollout(isvc, _observed("1", ready={"1": 1}), _at(5)).phase == "Ready"


def test_canary_walks_its_steps_and_promotes() -> None:
    isvc = ISVC.stable().obj()
    # New version: a candidate, waiting for its pods.
    waiting = _observed(ready={"1": 1})
    plan = plan_rollout(isvc, waiting, NOW)
    assert plan.canary is not None
    assert (plan.canary.version, plan.canary.weight, plan.canary.step_started_at) == ("2", 0, None)
    assert plan.progress[0] == reasons.WAITING_FOR_CANDIDATE
    isvc = _step(isvc, waiting, 0)
    # Ready: step 1 starts with its weight and the counters at its start.
    isvc = _step(isvc, _observed(sample=_sample(0)), 5)
    canary = isvc.status.canary  # type: ignore[union-attr]
    assert canary is not None
    assert (canary.step, canary.weight, canary.step_started_at) == (0, 10, _at(5))
    assert canary.baseline == _sample(0)
    # Within the interval nothing moves.
    assert plan_rollout(isvc, _observed(sample=_sample(50)), _at(30)).canary == canary
    # Interval over, analysis passes: step 2.
    isvc = _step(isvc, _observed(sample=_sample(100)), 65)
    canary = isvc.status.canary  # type: ignore[union-attr]
    assert canary is not None
    assert (canary.step, canary.weight, canary.step_started_at) == (1, 50, _at(65))
    assert canary.last_analysis is not None
    assert canary.last_analysis.outcome == "Passed"
    assert canary.last_analysis.requests == 100
    # Last step passes: promoted, registry written, history recorded.
    plan = plan_rollout(isvc, _observed(sample=_sample(300)), _at(125))
    assert plan.canary is None
    assert plan.stable is not None
    assert (plan.stable.version, plan.stable.weight) == ("2", 100)
    assert plan.phase == "Ready"
    assert plan.registry_writes[0].alias == "champion"
    assert plan.registry_writes[0].tags == {"rollout": "promoted"}
    assert plan.history[-1].outcome == "Promoted"
    assert plan.outcome is not None
    assert plan.outcome.duration_seconds == 125
    assert reasons.PROMOTED in [e.reason for e in plan.events]


@pytest.mark.parametrize(
    ("sample", "outcome", "failed_checks", "step"),
    [
        (_sample(3), "Held", 0, 0),  # too few requests: held, not failed
        (None, "Held", 0, 0),  # router unreadable: held
        (_sample(100, errors=20), "Failed", 1, 0),  # below threshold: counted, same step
        (_sample(100), "Passed", 0, 1),
    ],
)
def test_one_analysis(
    sample: CounterSample | None, outcome: str, failed_checks: int, step: int
) -> None:
    started = canary_track(weight=10, step_started_at=NOW, baseline={"requests": 0})
    isvc = ISVC.stable().status(canary=started).obj()
    plan = plan_rollout(isvc, _observed(sample=sample), _at(60))
    assert plan.canary is not None
    assert plan.analysis is not None
    assert plan.analysis.outcome == outcome
    assert plan.canary.failed_checks == failed_checks
    assert plan.canary.step == step
    assert plan.canary.step_started_at == _at(60)  # the next interval starts now


def test_failure_threshold_rolls_back_and_the_version_stays_rejected() -> None:
    failing = canary_track(
        weight=10, step_started_at=NOW, failed_checks=1, baseline={"requests": 0}
    )
    isvc = ISVC.stable().status(canary=failing).obj()
    plan = plan_rollout(isvc, _observed(sample=_sample(100, errors=30)), _at(60))
    assert plan.canary is None
    assert plan.phase == "RolledBack"
    assert plan.rejected is not None
    assert plan.rejected.version == "2"
    assert plan.rejected.reason is not None
    assert "success rate 0.700" in plan.rejected.reason
    assert plan.registry_writes[0].tags["rollout"] == "failed"
    assert "success rate" in plan.registry_writes[0].tags["rollout.reason"]
    assert plan.history[-1].outcome == "RolledBack"
    assert router_config(isvc, plan).weights == {"stable": 100}
    rolled = _step(isvc, _observed(sample=_sample(100, errors=30)), 60)
    # The next passes leave it be: same generation, same version.
    later = plan_rollout(rolled, _observed(), _at(300))
    assert later.canary is None
    assert later.phase == "RolledBack"
    # A new generation of the spec (or mlcycle.dev/retry) tries it again.
    edited = rolled.model_copy(
        update={"metadata": rolled.metadata.model_copy(update={"generation": 3})}
    )
    assert plan_rollout(edited, _observed(), _at(300)).canary is not None
    retried = rolled.model_copy(
        update={
            "metadata": rolled.metadata.model_copy(update={"annotations": {RETRY_ANNOTATION: "1"}})
        }
    )
    plan = plan_rollout(retried, _observed(), _at(300))
    assert plan.canary is not None
    assert plan.handled_annotations == {RETRY_ANNOTATION: "1"}


def test_annotations_promote_and_abort_at_once() -> None:
    running = canary_track(weight=10, step_started_at=NOW)
    promote = ISVC.annotations({PROMOTE_ANNOTATION: "true"}).stable().status(canary=running).obj()
    plan = plan_rollout(promote, _observed(), _at(1))
    assert plan.stable is not None
    assert plan.stable.version == "2"
    assert plan.handled_annotations == {PROMOTE_ANNOTATION: "true"}
    abort = ISVC.annotations({ABORT_ANNOTATION: "true"}).stable().status(canary=running).obj()
    plan = plan_rollout(abort, _observed(), _at(1))
    assert plan.canary is None
    assert plan.history[-1].outcome == "Aborted"
    assert plan.rejected is not None
    assert plan.handled_annotations == {ABORT_ANNOTATION: "true"}


def test_an_annotation_acts_once_per_value_and_is_never_removed() -> None:
    """GitOps re-applies the same annotation: the handled value in status keeps it from
    acting twice; a new value acts again; a removed one is forgotten."""
    running = canary_track(weight=10, step_started_at=NOW)
    promote = ISVC.annotations({PROMOTE_ANNOTATION: "1"}).stable().status(canary=running).obj()
    promoted = _step(promote, _observed(), 1)
    assert promoted.status is not None
    assert promoted.status.handled_annotations == {PROMOTE_ANNOTATION: "1"}
    assert promoted.metadata.annotations == {PROMOTE_ANNOTATION: "1"}
    # A new candidate while the same value is still there: not promoted.
    candidate = TrackStatus.model_validate(canary_track("3", weight=10, step_started_at=_at(2)))
    again = promoted.model_copy(
        update={"status": promoted.status.model_copy(update={"canary": candidate})}
    )
    both_ready = _observed("3", ready={"2": 1, "3": 1})

    def annotated(annotations: dict[str, str]) -> InferenceService:
        metadata = again.metadata.model_copy(update={"annotations": annotations})
        return again.model_copy(update={"metadata": metadata})

    plan = plan_rollout(again, both_ready, _at(3))
    assert plan.canary is not None
    assert plan.stable is not None
    assert plan.stable.version == "2"
    assert reasons.PROMOTION_REQUESTED not in [e.reason for e in plan.events]
    # A new value is a new request.
    plan = plan_rollout(annotated({PROMOTE_ANNOTATION: "2"}), both_ready, _at(3))
    assert plan.stable is not None
    assert plan.stable.version == "3"
    assert plan.handled_annotations == {PROMOTE_ANNOTATION: "2"}
    # Removed: forgotten, so setting it again (same value or not) acts.
    assert plan_rollout(annotated({}), both_ready, _at(3)).handled_annotations == {}


def test_an_mlflow_outage_does_not_hold_a_failing_candidate() -> None:
    """The version cannot be looked up, but the candidate in flight is still analysed and
    rolled back; the tags wait in status for MLflow."""
    failing = canary_track(
        weight=10, step_started_at=NOW, failed_checks=1, baseline={"requests": 0}
    )
    isvc = ISVC.stable().status(canary=failing, model_name=MODEL).obj()
    outage = Observed(
        target=None,
        blocked=Blocked(reasons.MLFLOW_UNAVAILABLE, "connection refused"),
        ready_replicas={"1": 1, "2": 1},
        router_ready=1,
        canary_sample=_sample(100, errors=30),
    )
    plan = plan_rollout(isvc, outage, _at(60))
    assert plan.canary is None
    assert plan.phase == "RolledBack"
    assert router_config(isvc, plan).weights == {"stable": 100}
    assert [(w.model_name, w.version, w.tags["rollout"]) for w in plan.pending_writes] == [
        (MODEL, "2", "failed")
    ]
    written = status_plan(isvc, outage, plan, _at(60))
    assert written.status["pendingRegistryWrites"][0]["version"] == "2"
    # The next passes, MLflow still down: still RolledBack, the write still owed.
    rolled = _step(isvc, outage, 60)
    later = plan_rollout(rolled, outage, _at(61))
    assert (later.phase, later.canary) == ("RolledBack", None)
    assert [w.version for w in later.pending_writes] == ["2"]
    # Another kind of block (an alias being moved) still holds the step.
    moved = dataclasses.replace(outage, blocked=Blocked(reasons.ALIAS_NOT_FOUND, "gone"))
    assert plan_rollout(isvc, moved, _at(60)).canary == isvc.status.canary  # type: ignore[union-attr]


def test_pending_writes_queue_after_the_ones_already_owed() -> None:
    owed = {"modelName": MODEL, "version": "5", "tags": {"rollout": "failed"},
            "decidedAt": NOW.isoformat(), "attempts": 3}  # fmt: skip
    failing = canary_track(
        weight=10, step_started_at=NOW, failed_checks=1, baseline={"requests": 0}
    )
    isvc = ISVC.stable().status(canary=failing, pending_registry_writes=[owed]).obj()
    plan = plan_rollout(isvc, _observed(sample=_sample(100, errors=30)), _at(60))
    assert [(w.version, w.attempts) for w in plan.pending_writes] == [("5", 3), ("2", 0)]


def test_paused_holds_the_step() -> None:
    running = canary_track(weight=10, step_started_at=NOW)
    isvc = ISVC.paused().stable().status(canary=running).obj()
    plan = plan_rollout(isvc, _observed(sample=_sample(500)), _at(600))
    assert plan.phase == "Paused"
    assert plan.analysis is None
    assert plan.canary is not None
    assert plan.canary.step == 0


def test_promotion_waits_for_the_candidate_to_reach_full_size() -> None:
    running = canary_track(weight=50, step=1, step_started_at=NOW, baseline={"requests": 0})
    isvc = (
        ISVC.spec(
            server={"replicas": 4},
            rollout={"steps": [10, 50], "interval": "1m", "capacity": "neutral"},
        )
        .stable()
        .status(canary=running)
        .obj()
    )
    plan = plan_rollout(isvc, _observed(ready={"1": 2, "2": 2}, sample=_sample(100)), _at(60))
    assert plan.phase == "Promoting"
    assert plan.canary is not None
    assert plan.canary.promoting
    assert desired_replicas(isvc, plan) == {"1": 2, "2": 4}
    promoting = _step(isvc, _observed(ready={"1": 2, "2": 2}, sample=_sample(100)), 60)
    plan = plan_rollout(promoting, _observed(ready={"1": 2, "2": 4}), _at(70))
    assert plan.stable is not None
    assert plan.stable.version == "2"
    assert desired_replicas(promoting, plan) == {"2": 4}


@pytest.mark.parametrize(
    ("capacity", "replicas", "weight_step", "expected"),
    [
        ("surge", 4, 0, {"1": 4, "2": 4}),
        ("neutral", 4, 0, {"1": 3, "2": 1}),  # 10% of 4 rounds up to one pod
        ("neutral", 4, 1, {"1": 2, "2": 2}),  # 50%
        ("neutral", 1, 1, {"1": 1, "2": 1}),  # the stable never drops below one pod
    ],
)
def test_capacity(capacity: str, replicas: int, weight_step: int, expected: dict[str, int]) -> None:
    isvc = ISVC.spec(
        server={"replicas": replicas},
        rollout={"steps": [10, 50], "interval": "1m", "capacity": capacity},
    ).obj()
    plan = RolloutPlan(
        stable=isvc.status.stable if isvc.status else None,
        canary=None,
        rejected=None,
        history=[],
        phase="Progressing",
    )
    plan.stable = TrackStatus(version="1", weight=100)
    plan.canary = TrackStatus(version="2", step=weight_step, weight=0)
    assert desired_replicas(isvc, plan) == expected


def test_immediate_promotes_once_ready_and_shadow_mirrors_its_steps() -> None:
    immediate = ISVC.spec(rollout={"strategy": "Immediate"}).stable().obj()
    plan = plan_rollout(immediate, _observed(), NOW)
    assert plan.stable is not None
    assert plan.stable.version == "2"
    shadow = (
        ISVC.spec(rollout={"strategy": "Shadow", "steps": [100], "interval": "1m"}).stable().obj()
    )
    isvc = _step(shadow, _observed(sample=_sample(0)), 0)
    assert isvc.status is not None
    config = router_config(isvc, plan_rollout(isvc, _observed(), _at(1)))
    assert config.weights == {"stable": 100, "canary": 0}
    assert config.shadow is not None
    assert (config.shadow.backend, config.shadow.percent) == ("canary", 100)


def test_ab_test_pins_the_header_and_waits_for_promotion() -> None:
    running = canary_track(weight=20, step_started_at=NOW, baseline={"requests": 0})
    isvc = (
        ISVC.spec(
            rollout={
                "strategy": "ABTest",
                "interval": "1m",
                "abTest": {"headerName": "x-group", "headerValue": "b", "weight": 20},
            }
        )
        .stable()
        .status(canary=running)
        .obj()
    )
    plan = plan_rollout(isvc, _observed(sample=_sample(100)), _at(60))
    assert plan.canary is not None
    assert plan.progress[0] == reasons.AWAITING_PROMOTION
    config = router_config(isvc, plan)
    assert config.weights == {"stable": 80, "canary": 20}
    assert [(r.header, r.value, r.backend) for r in config.header_routes] == [
        ("x-group", "b", "canary")
    ]


def test_a_new_version_supersedes_the_candidate_and_a_return_to_stable_ends_it() -> None:
    running = canary_track(weight=10, step_started_at=NOW)
    isvc = ISVC.model(MODEL, version=3).stable().status(canary=running).obj()
    plan = plan_rollout(isvc, _observed("3"), _at(1))
    assert plan.canary is not None
    assert plan.canary.version == "3"
    assert plan.history[-1].outcome == "Aborted"
    assert plan.rejected is None
    back = ISVC.model(MODEL, version=1).stable().status(canary=running).obj()
    plan = plan_rollout(back, _observed("1"), _at(1))
    assert plan.canary is None
    assert plan.phase == "Ready"


def test_blocked_model_keeps_the_stable_serving() -> None:
    isvc = ISVC.stable().obj()
    blocked = Observed(
        target=None, blocked=Blocked(reasons.NOT_APPROVED, "needs approval"),
        ready_replicas={"1": 1}, router_ready=1,
    )  # fmt: skip
    plan = plan_rollout(isvc, blocked, NOW)
    assert plan.phase == "Ready"
    assert plan.canary is None
    written = status_plan(isvc, blocked, plan, NOW)
    resolved = next(c for c in written.status["conditions"] if c["type"] == "ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", reasons.NOT_APPROVED)


def test_restart_resumes_the_same_step_with_the_same_timer() -> None:
    """Everything the next decision needs is in status: two planners agree."""
    running = canary_track(weight=10, step_started_at=NOW, baseline={"requests": 40})
    isvc = ISVC.stable().status(canary=running).obj()
    assert not analysis_due(isvc, _at(59))
    assert analysis_due(isvc, _at(60))
    first = plan_rollout(isvc, _observed(sample=_sample(140)), _at(61))
    again = plan_rollout(isvc, _observed(sample=_sample(140)), _at(61))
    assert first.canary == again.canary
    assert first.canary is not None
    assert first.canary.last_analysis is not None
    assert first.canary.last_analysis.requests == 100  # 140 minus the baseline kept in status


# --- Resolution, children, status ---------------------------------------------------------


MV = a_model_version("mv").model(MODEL).from_version(4).status(phase="Ready", version="4")
"""A ModelVersion object that adopted version 4, Ready."""


def test_model_version_reference() -> None:
    isvc = ISVC.model_version_ref("mv").obj()
    assert target_from_model_version(isvc, MV.obj()) == Target(MODEL, "4", "mv")
    unapproved = target_from_model_version(isvc, MV.spec(approval={"required": True}).obj())
    assert isinstance(unapproved, Blocked)
    assert unapproved.reason == reasons.NOT_APPROVED
    approved = MV.spec(approval={"required": True, "approvedBy": "alice"}).obj()
    assert target_from_model_version(isvc, approved) == Target(MODEL, "4", "mv")
    pending = target_from_model_version(isvc, MV.status(phase="Registering").obj())
    assert isinstance(pending, Blocked)
    assert pending.reason == reasons.MODEL_VERSION_NOT_READY
    missing = target_from_model_version(isvc, None)
    assert isinstance(missing, Blocked)
    assert missing.reason == reasons.MODEL_VERSION_NOT_FOUND


def test_model_servers_read_mlflow_credentials_from_the_named_secret() -> None:
    isvc = ISVC.stable().obj()
    plan = plan_rollout(isvc, _observed(), _at(1))
    servers = server_children(isvc, plan, MODEL, "http://mlflow:5000", credentials_secret="ml")
    deployment = next(c for c in servers if c["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        assert env[key]["valueFrom"] == {
            "secretKeyRef": {"name": "ml", "key": key, "optional": True}
        }


REQUIRED = {"required": True}
APPROVED = {"required": True, "approvedBy": "bob"}


@pytest.mark.parametrize(
    ("tagged", "tracking", "served"),
    [
        (False, [], True),  # registered outside mlcycle, nobody asks for approval
        (False, [None], True),  # tracked by a ModelVersion without approval
        (True, [], False),  # registered with approval required, its object since deleted
        (True, [None], False),  # adopted by an object without approval: no stand-in
        (False, [REQUIRED], False),  # a ModelVersion asks for approval
        (True, [REQUIRED, None], False),
        (True, [APPROVED], True),
        (False, [REQUIRED, APPROVED], True),  # approved on one object that requires it
    ],
)
def test_a_version_requiring_approval_is_served_only_once_approved(
    tagged: bool, tracking: list[dict[str, Any] | None], served: bool
) -> None:
    target = Target(MODEL, "4", approval_required=tagged)
    gated = approval_gate(target, [MV.spec(approval=approval).obj() for approval in tracking])
    if served:
        assert gated == target
    else:
        assert isinstance(gated, Blocked)
        assert gated.reason == reasons.NOT_APPROVED


def test_only_objects_tracking_the_same_version_count_for_approval() -> None:
    other = MV.spec(approval=APPROVED).status(version="5").obj()
    assert isinstance(approval_gate(Target(MODEL, "4", approval_required=True), [other]), Blocked)


def test_router_mode_children() -> None:
    running = canary_track(weight=10, step_started_at=NOW)
    isvc = ISVC.spec(server={"replicas": 2}).stable().status(canary=running).obj()
    plan = plan_rollout(isvc, _observed(), _at(1))
    servers = server_children(isvc, plan, MODEL, "http://mlflow:5000")
    kinds = [(c["kind"], c["metadata"]["name"]) for c in servers]
    assert kinds == [
        ("Service", "iris-v1"),
        ("Deployment", "iris-v1"),
        ("Service", "iris-v2"),
        ("Deployment", "iris-v2"),
    ]
    deployment = servers[3]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:6] == [
        "serve",
        "--model-uri=models:/iris/2",
        "--model-name=iris",
        "--model-version=2",
        "--host=$(POD_IP)",
        "--port=8080",
    ]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in container["env"]
    assert not [e for e in container["env"] if e["name"] == "MLFLOW_TRACKING_PASSWORD"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    routers = router_children(isvc, plan)
    assert [c["kind"] for c in routers] == [
        "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment", "ConfigMap",
    ]  # fmt: skip
    config = RouterConfig.from_text(routers[-1]["data"]["router.yaml"])
    assert config.weights == {"stable": 90, "canary": 10}
    assert config.backends["canary"].service == "iris-v2"
    args = routers[4]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--configmap=iris-router" in args
    assert "--admin-host=$(POD_IP)" in args
    # Once promoted, version 1's Deployment and Service are stale.
    observed_deployments = [
        {"metadata": {"name": f"iris-v{v}", "labels": {
            "app.kubernetes.io/component": "model-server", "mlcycle.dev/model-version": v}}}
        for v in ("1", "2")
    ]  # fmt: skip
    promoted = plan_rollout(
        isvc.model_copy(
            update={
                "metadata": isvc.metadata.model_copy(
                    update={"annotations": {PROMOTE_ANNOTATION: ""}}
                )
            }
        ),
        _observed(ready={"1": 2, "2": 2}),
        _at(2),
    )
    assert stale_server_children(observed_deployments, promoted) == [
        ("Deployment", "iris-v1"),
        ("Service", "iris-v1"),
    ]


def test_model_servers_and_routers_pass_the_restricted_standard_with_a_read_only_root() -> None:
    isvc = (
        ISVC.model(MODEL, version=1)
        .spec(
            traffic={"router": {"podTemplate": {"containerSecurityContext": {"runAsUser": 1001}}}}
        )
        .stable()
        .obj()
    )
    plan = plan_rollout(isvc, _observed(), _at(1))
    servers = server_children(isvc, plan, MODEL, None)
    server = next(c for c in servers if c["kind"] == "Deployment")
    router = next(c for c in router_children(isvc, plan) if c["kind"] == "Deployment")
    for deployment in (server, router):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        [container] = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["volumes"] == [{"name": "mlcycle-tmp", "emptyDir": {}}]
        assert container["volumeMounts"] == [{"name": "mlcycle-tmp", "mountPath": "/tmp"}]
    # A model server never calls the API; the router watches its EndpointSlices.
    assert server["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in router["spec"]["template"]["spec"]
    router_container = router["spec"]["template"]["spec"]["containers"][0]
    assert router_container["securityContext"]["runAsUser"] == 1001


def test_autoscaled_stable_leaves_replicas_to_the_hpa() -> None:
    isvc = (
        ISVC.model(MODEL, version=1)
        .spec(server={"minReplicas": 2, "maxReplicas": 5})
        .stable()
        .obj()
    )
    plan = plan_rollout(isvc, _observed("1"), NOW)
    children = server_children(isvc, plan, MODEL, None)
    deployment = next(c for c in children if c["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]
    hpa = next(c for c in children if c["kind"] == "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris-v1"


def test_status_conditions_and_a_patch_that_clears_what_is_gone() -> None:
    running = canary_track(weight=10, step_started_at=NOW, baseline={"requests": 0})
    isvc = (
        ISVC.annotations({PROMOTE_ANNOTATION: "1"})
        .stable()
        .status(canary=running, phase="Progressing")
        .obj()
    )
    observed = _observed()
    plan = plan_rollout(isvc, observed, _at(1))
    written = status_plan(isvc, observed, plan, _at(1))
    assert written.changed
    assert written.status["canary"] is None  # merge patch: null removes it
    assert written.status["phase"] == "Ready"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in written.status["conditions"]}
    assert conditions["Ready"] == ("True", reasons.SERVING)
    assert conditions["TrafficAvailable"] == ("True", reasons.SERVING)
    assert conditions["Progressing"][0] == "False"
    assert conditions["RolledBack"] == ("False", reasons.NO_ROLLBACK)
    # A pass that changes nothing writes nothing (the annotation stays, handled).
    settled = _step(isvc, observed, 1)
    again = status_plan(settled, observed, plan_rollout(settled, observed, _at(5)), _at(5))
    assert not again.changed


def test_merge_patch_nulls_removed_keys_recursively() -> None:
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 2}}) == {
        "b": {"c": 2, "d": None},
        "a": None,
    }
