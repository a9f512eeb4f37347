"""Acceptance planning and condition bookkeeping, on an injected clock."""

from __future__ import annotations

import datetime

import pytest
from pydantic import ValidationError

from mlcycle.api.v1alpha1 import TrainingJob
from mlcycle.api.v1alpha1.common import Condition
from mlcycle.plan import reasons
from mlcycle.plan.acceptance import plan_acceptance
from mlcycle.plan.conditions import set_condition, status_changed
from mlcycle.reconcile.acceptance import reconcile_acceptance, spec_error_summary

pytestmark = pytest.mark.unit

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def _condition(status: str, reason: str = "SpecValid", at: datetime.datetime = T0) -> Condition:
    return Condition(
        type="Accepted",
        status=status,
        reason=reason,
        message="",
        last_transition_time=at,
        observed_generation=1,
    )


@pytest.mark.parametrize(
    ("previous", "new_status", "expected_transition"),
    [
        pytest.param(None, "True", T1, id="first condition starts now"),
        pytest.param(_condition("True"), "True", T0, id="same status keeps its time"),
        pytest.param(_condition("False", "InvalidSpec"), "True", T1, id="flip moves the time"),
    ],
)
def test_transition_time_moves_only_with_status(
    previous: Condition | None, new_status: str, expected_transition: datetime.datetime
) -> None:
    conditions = [previous] if previous else []
    updated = set_condition(
        conditions,
        type_="Accepted",
        status=new_status,
        reason="SpecValid",
        message="ok",
        observed_generation=2,
        now=T1,
    )
    assert [c.type for c in updated] == ["Accepted"]
    assert updated[0].last_transition_time == expected_transition
    assert updated[0].observed_generation == 2


def test_other_condition_types_are_kept_and_sorted() -> None:
    ready = _condition("True").model_copy(update={"type": "Ready"})
    updated = set_condition(
        [ready],
        type_="Accepted",
        status="True",
        reason="SpecValid",
        message="ok",
        observed_generation=1,
        now=T1,
    )
    assert [c.type for c in updated] == ["Accepted", "Ready"]


@pytest.mark.parametrize(
    ("spec_error", "phase", "expected_phase", "event_type", "reason"),
    [
        (None, None, "Pending", "Normal", reasons.SPEC_VALID),
        ("spec.workers: too small", None, "Failed", "Warning", reasons.INVALID_SPEC),
        (None, "Running", None, "Normal", reasons.SPEC_VALID),
    ],
)
def test_acceptance_plan(
    spec_error: str | None,
    phase: str | None,
    expected_phase: str | None,
    event_type: str,
    reason: str,
) -> None:
    plan = plan_acceptance(
        generation=3,
        conditions=[],
        phase=phase,
        initial_phase="Pending",
        spec_error=spec_error,
        now=T0,
    )
    assert plan.status_patch["observedGeneration"] == 3
    assert plan.status_patch.get("phase") == expected_phase
    (accepted,) = plan.status_patch["conditions"]
    assert accepted["reason"] == reason
    assert accepted["observedGeneration"] == 3
    assert plan.event is not None
    assert (plan.event.type, plan.event.reason) == (event_type, reason)


def test_replanning_an_unchanged_object_writes_nothing_and_posts_no_event() -> None:
    first = plan_acceptance(
        generation=1, conditions=[], phase=None, initial_phase="Pending", spec_error=None, now=T0
    )
    recorded = [Condition.model_validate(c) for c in first.status_patch["conditions"]]
    second = plan_acceptance(
        generation=1,
        conditions=recorded,
        phase="Pending",
        initial_phase="Pending",
        spec_error=None,
        now=T1,
    )
    assert second.event is None
    assert not status_changed({**first.status_patch}, second.status_patch)


def _body(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "mlcycle.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "t", "namespace": "ns", "generation": 2, "uid": "u"},
        "spec": {"image": "i", "command": ["python"], **spec},
    }


def test_reconcile_turns_an_invalid_spec_into_a_condition_not_an_exception() -> None:
    plan = reconcile_acceptance(TrainingJob, _body(workers=0), now=T0)
    (accepted,) = plan.status_patch["conditions"]
    assert accepted["status"] == "False"
    assert accepted["reason"] == reasons.INVALID_SPEC
    assert "workers" in accepted["message"]
    assert plan.status_patch["phase"] == "Failed"


def test_error_summary_names_fields_and_caps_length() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingJob.from_body(
            _body(workers=0, backoffLimit=-1, activeDeadlineSeconds=0, suspend="x")
        )
    summary = spec_error_summary(caught.value, limit=2)
    assert summary.count(";") == 1
    assert "more)" in summary
