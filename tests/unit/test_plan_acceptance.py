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
from tests.builders import NOW, a_condition, a_training_job, later

pytestmark = pytest.mark.unit

T1 = later(minutes=5)
ACCEPTED = a_condition("Accepted", "True", "SpecValid", observed_generation=1)
REFUSED = a_condition("Accepted", "False", "InvalidSpec", observed_generation=1)


@pytest.mark.parametrize(
    ("previous", "new_status", "expected_transition"),
    [
        pytest.param(None, "True", T1, id="first condition starts now"),
        pytest.param(ACCEPTED, "True", NOW, id="same status keeps its time"),
        pytest.param(REFUSED, "True", T1, id="flip moves the time"),
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
    ready = a_condition("Ready", "True", "SpecValid", observed_generation=1)
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
        now=NOW,
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
        generation=1, conditions=[], phase=None, initial_phase="Pending", spec_error=None, now=NOW
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


def test_reconcile_turns_an_invalid_spec_into_a_condition_not_an_exception() -> None:
    plan = reconcile_acceptance(TrainingJob, a_training_job().workers(0).body(), now=NOW)
    (accepted,) = plan.status_patch["conditions"]
    assert accepted["status"] == "False"
    assert accepted["reason"] == reasons.INVALID_SPEC
    assert "workers" in accepted["message"]
    assert plan.status_patch["phase"] == "Failed"


def test_error_summary_names_fields_and_caps_length() -> None:
    with pytest.raises(ValidationError) as caught:
        a_training_job().workers(0).backoff_limit(-1).spec(
            active_deadline_seconds=0, suspend="x"
        ).obj()
    summary = spec_error_summary(caught.value, limit=2)
    assert summary.count(";") == 1
    assert "more)" in summary
