"""ModelVersion planning: sources, the version kept, tags, approval, alias ownership and
history, backoff and status, on real models and an injected clock."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlcycle.api.v1alpha1 import InferenceService, ModelVersion, TrainingJob
from mlcycle.api.v1alpha1.modelversion import ModelVersionStatus
from mlcycle.plan import reasons
from mlcycle.plan.alias_ownership import (
    Claimant,
    claim_is_live,
    claim_key,
    claim_value,
    claim_verdict,
    claimant,
    foreign_claims,
    wanted_aliases,
)
from mlcycle.plan.approval import approval_status
from mlcycle.plan.backoff import BACKOFF_CAP_SECONDS, backoff_seconds
from mlcycle.plan.conditions import find_condition
from mlcycle.plan.modelversion.aliases import plan_aliases, release_all
from mlcycle.plan.modelversion.source import (
    ResolvedSource,
    RunRef,
    SourceBlocked,
    resolve_run,
    run_ref,
)
from mlcycle.plan.modelversion.status import (
    Progress,
    backing_off,
    signature_settled,
    status_plan,
    unavailable_progress,
)
from mlcycle.plan.modelversion.tags import (
    DECLARED_TAGS_TAG,
    desired_version_tags,
    dropped_tags,
    tag_updates,
)
from mlcycle.plan.modelversion.version import keep_oldest, registration_state
from tests.builders import NOW, RUN_ID, a_model_version, a_training_job, an_inference_service

pytestmark = pytest.mark.unit


# --- Builders -------------------------------------------------------------------------------


VERSION = a_model_version("clf-v1", namespace="team-a").generation(2).model("clf").from_run(RUN_ID)
TRAINING = a_training_job("iris", namespace="team-a").uid("tj-uid")


@dataclass(frozen=True)
class Run:
    run_id: str = RUN_ID
    status: str = "FINISHED"
    experiment_id: str = "4"
    dataset_uri: str | None = None
    dataset_digest: str | None = None
    dataset_version: str | None = None
    training_job: str | None = None


@dataclass(frozen=True)
class Version:
    version: str
    creation_ms: int
    status: str = "READY"
    status_message: str = ""
    source: str = "models:/m-1"
    run_id: str | None = RUN_ID
    model_id: str | None = "m-1"
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


# --- Sources --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("training", "expected"),
    [
        (None, SourceBlocked(reasons.TRAINING_JOB_NOT_FOUND, "", failed=False)),
        (
            TRAINING.status(phase="Running", mlflow_run_id=RUN_ID).obj(),
            SourceBlocked(reasons.WAITING_FOR_TRAINING_JOB, "", failed=False),
        ),
        (
            TRAINING.status().obj(),
            SourceBlocked(reasons.WAITING_FOR_TRAINING_JOB, "", failed=False),
        ),
        (
            TRAINING.status(phase="Succeeded").obj(),
            SourceBlocked(reasons.WAITING_FOR_TRAINING_JOB, "", failed=False),
        ),
        (
            TRAINING.status(phase="Failed", failure_reason="OOMKilled", mlflow_run_id=RUN_ID).obj(),
            SourceBlocked(reasons.TRAINING_JOB_FAILED, "", failed=True),
        ),
        (
            TRAINING.status(phase="Succeeded", mlflow_run_id=RUN_ID).obj(),
            RunRef(RUN_ID, "model", "iris", None),
        ),
        (
            TRAINING.registration("iris", artifact_path="clf")
            .status(phase="Succeeded", mlflow_run_id=RUN_ID)
            .obj(),
            RunRef(RUN_ID, "clf", "iris", None),
        ),
    ],
)
def test_training_job_source_waits_for_success_and_takes_its_run(
    training: TrainingJob | None, expected: RunRef | SourceBlocked
) -> None:
    mv = VERSION.from_training_job("iris").obj()
    ref = run_ref(mv, training)
    if isinstance(expected, SourceBlocked):
        assert isinstance(ref, SourceBlocked)
        assert (ref.reason, ref.failed) == (expected.reason, expected.failed)
        assert "iris" in ref.message
    else:
        assert ref == expected


def test_training_job_dataset_is_the_lineage_dataset() -> None:
    training = (
        TRAINING.dataset("s3://data/iris.csv", version="3")
        .status(phase="Succeeded", mlflow_run_id=RUN_ID)
        .obj()
    )
    ref = run_ref(VERSION.from_training_job("iris").obj(), training)
    assert isinstance(ref, RunRef)
    assert ref.dataset is not None
    assert ref.dataset.uri == "s3://data/iris.csv"


def test_uri_and_version_sources_have_no_run() -> None:
    assert run_ref(VERSION.from_uri("s3://b/model").obj(), None) is None
    assert run_ref(VERSION.from_version(3).obj(), None) is None


@pytest.mark.parametrize(
    ("run", "logged_model", "reason", "uri"),
    [
        (None, None, reasons.RUN_NOT_FOUND, None),
        (Run(status="RUNNING"), None, reasons.WAITING_FOR_RUN, None),
        (Run(status="SCHEDULED"), None, reasons.WAITING_FOR_RUN, None),
        (Run(status="FAILED"), None, reasons.RUN_FAILED, None),
        (Run(status="KILLED"), None, reasons.RUN_FAILED, None),
        # MLflow 3: the LoggedModel named like the artifact path, registered by id.
        (Run(), "m-42", None, "models:/m-42"),
        # A classic run that logged its model as plain run artifacts.
        (Run(), None, None, f"runs:/{RUN_ID}/model"),
    ],
)
def test_run_source_waits_for_finished_and_prefers_the_logged_model(
    run: Run | None, logged_model: str | None, reason: str | None, uri: str | None
) -> None:
    resolved = resolve_run(RunRef(RUN_ID, "model"), run, logged_model)
    if reason is not None:
        assert isinstance(resolved, SourceBlocked)
        assert resolved.reason == reason
        assert resolved.failed == (reason in (reasons.RUN_NOT_FOUND, reasons.RUN_FAILED))
        return
    assert isinstance(resolved, ResolvedSource)
    assert resolved.uri == uri
    assert resolved.model_id == logged_model
    assert resolved.lineage.run_id == RUN_ID
    assert resolved.lineage.experiment_id == "4"


def test_run_dataset_input_is_the_lineage_dataset_when_the_spec_has_none() -> None:
    run = Run(dataset_uri="sklearn://datasets/iris", dataset_digest="abc", dataset_version="1")
    resolved = resolve_run(RunRef(RUN_ID, "model"), run, None)
    assert isinstance(resolved, ResolvedSource)
    assert resolved.lineage.dataset is not None
    assert resolved.lineage.dataset.uri == "sklearn://datasets/iris"
    assert resolved.lineage.dataset.version == "1"


# --- The version ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("versions", "kept", "extras"),
    [
        ([], None, []),
        ([Version("3", 100)], "3", []),
        ([Version("4", 200), Version("3", 100)], "3", ["4"]),
        # Same millisecond: the lower number wins, whichever order the search returned.
        ([Version("10", 100), Version("9", 100)], "9", ["10"]),
    ],
)
def test_the_oldest_version_is_kept_and_the_rest_are_extras(
    versions: list[Version], kept: str | None, extras: list[str]
) -> None:
    keep, rest = keep_oldest(versions)
    assert (keep.version if keep else None) == kept
    assert [extra.version for extra in rest] == extras


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("READY", "Ready"),
        ("PENDING_REGISTRATION", "Registering"),
        ("FAILED_REGISTRATION", "Failed"),
    ],
)
def test_registration_state(status: str, state: str) -> None:
    assert registration_state(Version("1", 1, status=status)) == state


def test_declared_tags_are_set_and_changed_ones_set_back() -> None:
    mv = VERSION.spec(tags={"team": "a", "stage": "prod"}).obj()
    desired = desired_version_tags(mv)
    assert desired["mlcycle.dev/namespace"] == "team-a"
    assert desired["mlcycle.dev/name"] == "clf-v1"
    actual = {**desired, "team": "b", "extra": "kept"}
    assert tag_updates(desired, actual) == {"team": "a"}


# --- Approval and aliases -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("approval", "aliases"),
    [
        (None, ["champion"]),
        ({"required": False}, ["champion"]),
        ({"required": True}, []),
        ({"required": True, "approvedBy": "alice"}, ["champion"]),
    ],
)
def test_aliases_wait_for_approval(approval: dict[str, Any] | None, aliases: list[str]) -> None:
    assert wanted_aliases(VERSION.aliases("champion").spec(approval=approval).obj()) == aliases


def _plan(mv: ModelVersion, *, version: str = "2", **observed: Any) -> Any:
    return plan_aliases(
        mv,
        version=version,
        model_aliases=observed.get("model_aliases", {}),
        model_tags=observed.get("model_tags", {}),
        verdicts=observed.get("verdicts", {}),
        previously_held=observed.get("previously_held", []),
        now=NOW,
    )


def test_a_free_alias_is_claimed_set_and_recorded() -> None:
    mv = VERSION.aliases("champion").obj()
    plan = _plan(mv, model_aliases={"champion": "1"})
    assert plan.claims == {claim_key("champion"): claim_value(mv)}
    assert plan.set_aliases == ["champion"]
    assert plan.held == ["champion"]
    [move] = plan.moves
    assert (move.action, move.previous_version, move.reason) == ("Set", "1", "declared")
    assert plan.version_tags == {
        "mlcycle.dev/alias.champion": "Set at 2026-01-01T12:00:00Z, previous version 1"
    }
    assert [event.reason for event in plan.events] == [reasons.ALIAS_MOVED]


def test_an_alias_in_place_and_claimed_needs_nothing() -> None:
    mv = VERSION.aliases("champion").obj()
    plan = _plan(
        mv,
        model_aliases={"champion": "2"},
        model_tags={claim_key("champion"): claim_value(mv)},
        previously_held=["champion"],
    )
    assert (plan.claims, plan.set_aliases, plan.moves, plan.events) == ({}, [], [], [])
    assert plan.held == ["champion"]


def test_a_live_claim_of_another_object_is_a_conflict_not_a_move() -> None:
    mv = VERSION.aliases("champion").obj()
    other = "team-a/older/uid-0"
    plan = _plan(
        mv,
        model_aliases={"champion": "1"},
        model_tags={claim_key("champion"): other},
        verdicts={"champion": "Conflict"},
    )
    assert plan.conflicts == {"champion": Claimant("team-a", "older", "uid-0")}
    assert (plan.claims, plan.set_aliases, plan.held) == ({}, [], [])


def test_a_stale_claim_is_taken_over() -> None:
    mv = VERSION.aliases("champion").obj()
    plan = _plan(
        mv,
        model_aliases={"champion": "1"},
        model_tags={claim_key("champion"): "team-a/gone/uid-0"},
        verdicts={"champion": "Take"},
    )
    assert plan.claims == {claim_key("champion"): claim_value(mv)}
    assert plan.set_aliases == ["champion"]


def test_an_owned_alias_moved_in_mlflow_is_set_back_as_drift() -> None:
    mv = VERSION.aliases("champion").obj()
    plan = _plan(
        mv,
        model_aliases={"champion": "5"},
        model_tags={claim_key("champion"): claim_value(mv)},
        previously_held=["champion"],
    )
    assert plan.set_aliases == ["champion"]
    assert [event.reason for event in plan.events] == [reasons.DRIFT_CORRECTED]
    assert "set back" in str(plan.moves[0].reason)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"aliases": []}, "no longer declared"),
        ({"aliases": ["champion"], "approval": {"required": True}}, "approval withdrawn"),
    ],
)
def test_an_alias_no_longer_wanted_is_removed_and_its_claim_released(
    spec: dict[str, Any], why: str
) -> None:
    mv = VERSION.spec(**spec).obj()
    plan = _plan(
        mv,
        model_aliases={"champion": "2"},
        model_tags={claim_key("champion"): claim_value(mv), "owner": "x"},
        previously_held=["champion"],
    )
    assert plan.remove_aliases == ["champion"]
    assert plan.releases == [claim_key("champion")]
    assert plan.moves[0].action == "Removed"
    assert plan.moves[0].reason == why


def test_a_released_alias_already_moved_elsewhere_is_left_alone() -> None:
    mv = VERSION.aliases().obj()
    plan = _plan(
        mv, model_aliases={"champion": "7"}, model_tags={claim_key("champion"): claim_value(mv)}
    )
    assert plan.remove_aliases == []
    assert plan.releases == [claim_key("champion")]


@pytest.mark.parametrize(
    ("current", "live"),
    [
        (None, False),
        (VERSION.named("older").uid("uid-other").aliases("champion").obj(), False),  # recreated
        (VERSION.named("older").uid("uid-0").aliases("champion").deleting().obj(), False),
        (VERSION.named("older").uid("uid-0").aliases().obj(), False),
        (
            VERSION.named("older")
            .uid("uid-0")
            .aliases("champion")
            .spec(approval={"required": True})
            .obj(),
            False,
        ),
        (VERSION.named("older").uid("uid-0").aliases("champion").obj(), True),
    ],
)
def test_a_claim_stands_while_its_object_exists_and_wants_the_alias(
    current: ModelVersion | None, live: bool
) -> None:
    assert claim_is_live("champion", Claimant("team-a", "older", "uid-0"), current) is live


PROMOTER = (
    an_inference_service("iris", namespace="team-a")
    .uid("uid-5")
    .model("iris", alias="challenger")
    .promote_alias("champion")
)
"""An InferenceService that moves `champion` to each version it promotes."""


def _registration(uid: str, version: str | None, policy: str = "Newest") -> ModelVersion:
    """A registration claiming `champion`; Ready at `version` when there is one."""
    registration = VERSION.named(f"clf-{uid}").uid(uid).aliases("champion").alias_policy(policy)
    if version:
        registration = registration.status(phase="Ready", version=version)
    return registration.obj()


_NEWEST_V3 = _registration("uid-3", "3")


@pytest.mark.parametrize(
    ("holder_now", "contender", "contender_version", "verdict"),
    [
        # A stale claim is anyone's.
        (None, _registration("uid-9", "1"), "1", "Take"),
        (VERSION.named("clf-uid-0").uid("uid-0").aliases().obj(), PROMOTER.obj(), None, "Take"),
        # A newer gated registration takes the alias; an older one never takes it back.
        (_NEWEST_V3, _registration("uid-9", "4"), "4", "Take"),
        (_registration("uid-4", "4"), _registration("uid-9", "3"), "3", "Superseded"),
        # The same version adopted twice: neither is newer.
        (_NEWEST_V3, _registration("uid-9", "3"), "3", "Conflict"),
        # The holder's status write was lost after its claim: wait until it lands.
        (_registration("uid-0", None), _registration("uid-9", "4"), "4", "Conflict"),
        # A person's pin and a promotion outrank a gated registration, not the reverse.
        (_NEWEST_V3, _registration("uid-9", "1", "Pin"), "1", "Take"),
        (_NEWEST_V3, PROMOTER.obj(), None, "Take"),
        (_registration("uid-0", "1", "Pin"), _registration("uid-9", "4"), "4", "Conflict"),
        (PROMOTER.uid("uid-0").obj(), _registration("uid-9", "4"), "4", "Conflict"),
        # Two pins, or two promotions: first come keeps it.
        (_registration("uid-0", "1", "Pin"), _registration("uid-9", "4", "Pin"), "4", "Conflict"),
        (PROMOTER.uid("uid-0").obj(), PROMOTER.obj(), None, "Conflict"),
    ],
)
def test_claim_verdict(
    holder_now: ModelVersion | InferenceService | None,
    contender: ModelVersion | InferenceService,
    contender_version: str | None,
    verdict: str,
) -> None:
    uid = holder_now.metadata.uid if holder_now is not None else "uid-0"
    holder = Claimant("team-a", "holder", str(uid), "ModelVersion")
    if isinstance(holder_now, InferenceService):
        holder = Claimant("team-a", "iris", str(uid), "InferenceService")
    assert claim_verdict("champion", holder, holder_now, contender, contender_version) == verdict


def test_claim_verdicts_are_one_way() -> None:
    """Whoever may take an alias, the object it takes it from may not take it back."""
    objects: list[tuple[ModelVersion | InferenceService, str | None]] = [
        (_registration("uid-1", "1"), "1"),
        (_registration("uid-2", "2"), "2"),
        (_registration("uid-3", "3", "Pin"), "3"),
        (_registration("uid-4", "4", "Pin"), "4"),
        (PROMOTER.uid("uid-5").obj(), None),
        (PROMOTER.uid("uid-6").obj(), None),
    ]
    for holder_now, _ in objects:
        for contender, contender_version in objects:
            if contender is holder_now:
                continue
            uid = str(holder_now.metadata.uid)
            holder = Claimant("team-a", "holder", uid, holder_now.kind)
            if claim_verdict("champion", holder, holder_now, contender, contender_version) != (
                "Take"
            ):
                continue
            back = Claimant("team-a", "contender", str(contender.metadata.uid), contender.kind)
            held_version = (
                holder_now.status.version
                if isinstance(holder_now, ModelVersion) and holder_now.status
                else None
            )
            assert claim_verdict("champion", back, contender, holder_now, held_version) != "Take", (
                holder_now.metadata.uid,
                contender.metadata.uid,
            )


def test_an_older_registration_reports_the_newer_one_and_leaves_the_alias() -> None:
    mv = _registration("uid-1", "1")
    aliases = _plan(
        mv,
        version="1",
        model_aliases={"champion": "1"},
        model_tags={claim_key("champion"): "team-a/clf-uid-2/uid-2"},
        verdicts={"champion": "Superseded"},
        previously_held=["champion"],
    )
    assert aliases.superseded == {"champion": Claimant("team-a", "clf-uid-2", "uid-2")}
    assert (aliases.claims, aliases.set_aliases, aliases.remove_aliases, aliases.held) == (
        {},
        [],
        [],
        [],
    )
    assert aliases.events == []  # not drift: the alias moved on by the rule
    planned = status_plan(mv, Progress(phase="Ready", version="1", aliases=aliases), NOW)
    synced = next(c for c in planned.status["conditions"] if c["type"] == reasons.ALIASES_SYNCED)
    assert (synced["status"], synced["reason"]) == ("True", reasons.ALIAS_SUPERSEDED)
    assert "team-a/clf-uid-2" in synced["message"]
    assert reasons.ALIAS_SUPERSEDED in [e.reason for e in planned.events]
    assert [e.reason for e in planned.events if e.type == "Warning"] == []


def test_an_inferenceservice_claims_the_alias_it_promotes_to() -> None:
    isvc = InferenceService.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "team-a", "uid": "uid-5"},
            "spec": {
                "model": {"name": "iris", "alias": "challenger"},
                "registry": {"promoteAlias": "champion"},
            },
        }
    )
    value = claim_value(isvc)
    assert value == "InferenceService:team-a/iris/uid-5"
    owner = claimant(value)
    assert owner == Claimant("team-a", "iris", "uid-5", "InferenceService")
    assert claim_is_live("champion", owner, isvc)
    assert not claim_is_live("production", owner, isvc)
    assert claimant("team-a/older/uid-0") == Claimant("team-a", "older", "uid-0")
    assert claimant("Secret:team-a/x/uid-1") is None


def test_foreign_claims_and_release_all_look_only_at_claim_tags() -> None:
    mv = VERSION.aliases("a", "b").obj()
    tags = {
        claim_key("a"): "team-a/other/uid-9",
        claim_key("b"): claim_value(mv),
        claim_key("c"): claim_value(mv),
        "owner": "team-a/x/uid-1",
    }
    assert foreign_claims(mv, tags) == {"a": Claimant("team-a", "other", "uid-9")}
    assert sorted(release_all(mv, tags)) == [claim_key("b"), claim_key("c")]


# --- Backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "jitter", "delay"),
    [
        (1, 0.0, 1.0),
        (1, 0.999, 1.999),
        (2, 0.0, 2.0),
        (3, 0.5, 6.0),
        (20, 0.0, BACKOFF_CAP_SECONDS / 2),
        (20, 1.0, BACKOFF_CAP_SECONDS),
    ],
)
def test_backoff_doubles_with_jitter_up_to_a_cap(retries: int, jitter: float, delay: float) -> None:
    assert backoff_seconds(retries, jitter) == pytest.approx(delay)


def test_unavailable_counts_attempts_and_schedules_the_next_one() -> None:
    mv = VERSION.status(phase="Pending", retry_count=2).obj()
    progress, delay = unavailable_progress(mv, reasons.MLFLOW_UNAVAILABLE, "down", NOW, 0.0)
    assert progress.retry_count == 3
    assert delay == 4.0
    assert progress.next_attempt_time == NOW + datetime.timedelta(seconds=4)
    assert progress.phase == "Pending"
    backed_off = ModelVersionStatus(next_attempt_time=progress.next_attempt_time)
    assert backing_off(backed_off, NOW + datetime.timedelta(seconds=1)) == 3.0
    assert backing_off(backed_off, NOW + datetime.timedelta(seconds=5)) is None


def test_a_rejected_registration_fails_the_object() -> None:
    progress, _delay = unavailable_progress(
        VERSION.obj(), reasons.MLFLOW_REJECTED, "bad name", NOW, 0.0
    )
    assert progress.phase == "Failed"


# --- Status ---------------------------------------------------------------------------------


def test_ready_status_has_uri_aliases_history_and_one_event_per_transition() -> None:
    mv = VERSION.aliases("champion").obj()
    aliases = _plan(mv, model_aliases={})
    progress = Progress(
        phase="Ready",
        registered=(True, reasons.VERSION_READY, "version 2 is READY"),
        source=ResolvedSource("models:/m-1", RUN_ID, "m-1", resolve_lineage()),
        version="2",
        aliases=aliases,
    )
    planned = status_plan(mv, progress, NOW)
    assert planned.changed
    status = planned.status
    assert status["phase"] == "Ready"
    assert status["modelUri"] == "models:/clf/2"
    assert status["aliases"] == ["champion"]
    assert status["aliasHistory"][0]["alias"] == "champion"
    reasons_emitted = [event.reason for event in planned.events]
    assert reasons_emitted.count(reasons.ALIAS_MOVED) == 1
    assert reasons.VERSION_READY in reasons_emitted

    again = VERSION.aliases("champion").status(**status).obj()
    steady = _plan(
        again,
        model_aliases={"champion": "2"},
        model_tags={claim_key("champion"): claim_value(again)},
        previously_held=["champion"],
    )
    replanned = status_plan(
        again,
        Progress(
            phase="Ready",
            registered=(True, reasons.VERSION_READY, "version 2 is READY"),
            version="2",
            aliases=steady,
        ),
        NOW + datetime.timedelta(minutes=5),
    )
    assert not replanned.changed
    assert replanned.events == []


def resolve_lineage() -> Any:
    resolved = resolve_run(RunRef(RUN_ID, "model", "iris"), Run(), "m-1")
    assert isinstance(resolved, ResolvedSource)
    return resolved.lineage


def test_waiting_is_a_normal_event_and_the_unavailable_retry_fields_are_cleared_after() -> None:
    mv = VERSION.status(
        phase="Pending", retry_count=3, next_attempt_time="2026-01-01T11:59:00Z"
    ).obj()
    blocked = SourceBlocked(reasons.WAITING_FOR_RUN, "waiting", failed=False)
    planned = status_plan(mv, Progress(phase="Pending", source_blocked=blocked), NOW)
    assert planned.status["retryCount"] is None
    assert planned.status["nextAttemptTime"] is None
    [event] = [e for e in planned.events if e.reason == reasons.WAITING_FOR_RUN]
    assert event.type == "Normal"
    condition = find_condition(
        ModelVersionStatus.model_validate(
            {k: v for k, v in planned.status.items() if v is not None}
        ).conditions,
        reasons.SOURCE_READY,
    )
    assert condition is not None
    assert condition.status == "False"


def test_an_alias_conflict_is_a_condition_naming_the_owner() -> None:
    mv = VERSION.aliases("champion").obj()
    aliases = _plan(
        mv,
        model_tags={claim_key("champion"): "team-a/older/uid-0"},
        verdicts={"champion": "Conflict"},
    )
    planned = status_plan(mv, Progress(phase="Ready", version="2", aliases=aliases), NOW)
    synced = next(c for c in planned.status["conditions"] if c["type"] == reasons.ALIASES_SYNCED)
    assert synced["reason"] == reasons.ALIAS_CONFLICT
    assert "team-a/older" in synced["message"]
    assert [e.reason for e in planned.events if e.type == "Warning"] == [reasons.ALIAS_CONFLICT]


def test_alias_history_is_bounded() -> None:
    history = [{"alias": "a", "action": "Set", "time": "2026-01-01T00:00:00Z"} for _ in range(50)]
    mv = VERSION.aliases("champion").status(phase="Ready", alias_history=history).obj()
    planned = status_plan(
        mv, Progress(phase="Ready", version="2", aliases=_plan(mv, model_aliases={})), NOW
    )
    assert len(planned.status["aliasHistory"]) == 50
    assert planned.status["aliasHistory"][-1]["alias"] == "champion"


def test_approval_time_is_recorded_once() -> None:
    approved = {"required": True, "approvedBy": "alice"}
    first = approval_status(VERSION.spec(approval=approved).obj(), None, NOW)
    assert (first.approved, first.approved_by, first.approved_at) == (True, "alice", NOW)
    later = approval_status(
        VERSION.spec(approval=approved).obj(), first, NOW + datetime.timedelta(1)
    )
    assert later.approved_at == NOW
    other = approval_status(
        VERSION.spec(approval={**approved, "approvedBy": "bob"}).obj(),
        first,
        NOW + datetime.timedelta(1),
    )
    assert other.approved_at == NOW + datetime.timedelta(1)


def test_a_run_made_by_a_trainingjob_names_it_in_the_lineage() -> None:
    resolved = resolve_run(RunRef(RUN_ID, "model"), Run(training_job="iris"), None)
    assert isinstance(resolved, ResolvedSource)
    assert resolved.lineage.training_job == "iris"


def test_only_tags_the_spec_declared_before_are_dropped() -> None:
    mv = VERSION.spec(tags={"tier": "1"}).obj()
    declared_before = {
        DECLARED_TAGS_TAG: '["team", "tier"]',
        "team": "a",
        "tier": "0",
        "reviewed-by": "alice",
    }
    assert dropped_tags(mv, declared_before) == ["team"]
    assert desired_version_tags(mv)[DECLARED_TAGS_TAG] == '["tier"]'
    # Nothing is known to be ours when the record is missing or was edited by hand.
    assert dropped_tags(mv, {"team": "a"}) == []
    assert dropped_tags(mv, {DECLARED_TAGS_TAG: "team", "team": "a"}) == []


def test_a_ready_object_is_compared_with_mlflow_at_the_drift_interval_only() -> None:
    import asyncio

    from mlcycle.reconcile.memory import Checked
    from mlcycle.reconcile.modelversion import ModelVersionDeps, reconcile_modelversion

    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"{name} called during a skipped resync")

    deps = ModelVersionDeps(
        cluster=Untouchable(),  # type: ignore[arg-type]
        registry_for=Untouchable(),  # type: ignore[arg-type]
        default_tracking_uri="http://mlflow",
        metrics=Untouchable(),  # type: ignore[arg-type]
        drift_check_seconds=60,
    )
    ready = VERSION.status(phase="Ready", observed_generation=2).obj()
    deps.memory.of(str(ready.metadata.uid)).checked = Checked(NOW, 2, None)
    outcome = asyncio.run(reconcile_modelversion(ready, deps, NOW, resync=True))
    assert outcome.events == []
    # A change (or the interval passing) is a full pass: it reads the object first.
    with pytest.raises(AssertionError, match="get called"):
        asyncio.run(reconcile_modelversion(ready, deps, NOW, resync=False))


def _parsed(status: dict[str, Any]) -> ModelVersionStatus:
    return ModelVersionStatus.model_validate({k: v for k, v in status.items() if v is not None})


def test_an_unreadable_signature_is_a_warning_condition_read_again_until_settled() -> None:
    mv = VERSION.obj()
    failed = status_plan(
        mv,
        Progress(
            phase="Ready",
            version="1",
            signature_read=(False, reasons.SIGNATURE_UNAVAILABLE, "scratch space: no /tmp"),
        ),
        NOW,
    )
    read = find_condition(_parsed(failed.status).conditions, reasons.SIGNATURE_READ)
    assert read is not None
    assert (read.status, read.reason) == ("False", reasons.SIGNATURE_UNAVAILABLE)
    [event] = [e for e in failed.events if e.reason == reasons.SIGNATURE_UNAVAILABLE]
    assert event.type == "Warning"
    assert not signature_settled(_parsed(failed.status))

    # A pass that does not read again (settled, or MLflow unreachable) keeps the condition.
    again = VERSION.status(**failed.status).obj()
    kept = status_plan(again, Progress(phase="Ready", version="1"), NOW)
    assert not [e for e in kept.events if e.reason == reasons.SIGNATURE_UNAVAILABLE]

    none = status_plan(
        again,
        Progress(
            phase="Ready",
            version="1",
            signature_read=(True, reasons.NO_SIGNATURE, "the MLmodel declares no signature"),
        ),
        NOW,
    )
    assert signature_settled(_parsed(none.status))
    assert [e.type for e in none.events if e.reason == reasons.NO_SIGNATURE] == ["Normal"]
