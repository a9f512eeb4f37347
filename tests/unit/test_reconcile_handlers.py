"""The handlers every kind shares: an invalid spec becomes the InvalidSpec condition, a
pass posts its Events and asks kopf to retry after its delay, a deletion forgets the
object, and the handler ids kopf keeps its progress under never change."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import kopf
import pytest

from mlcycle.adapters.metrics import OperatorMetrics
from mlcycle.api.v1alpha1 import TrainingJob
from mlcycle.handlers.kind import KindHandlers, Trigger
from mlcycle.handlers.registration import build_registry
from mlcycle.handlers.resync import Resync
from mlcycle.plan import reasons
from mlcycle.plan.conditions import EventIntent
from mlcycle.reconcile.memory import Memory
from mlcycle.reconcile.outcome import Outcome
from tests.builders import a_training_job

pytestmark = pytest.mark.unit

VALID = a_training_job("train")
INVALID = VALID.spec(workers=0)


class Kind:
    """One kind's handlers around a reconcile that records its passes and returns
    `outcome`."""

    def __init__(self, outcome: Outcome | None = None) -> None:
        self.outcome = outcome or Outcome()
        self.passes: list[tuple[TrainingJob, Trigger]] = []
        self.memory: Memory[None] = Memory()
        self.metrics = OperatorMetrics()
        self.memo = SimpleNamespace(context=SimpleNamespace(metrics=self.metrics))
        self.handlers = KindHandlers(
            TrainingJob,
            handler_prefix="train",
            reconcile=self._reconcile,
            memory=lambda _memo: self.memory,
            resync=Resync("TrainingJob", 5.0),
            waiting_on="a dependency",
        )

    async def _reconcile(self, tj: TrainingJob, trigger: Trigger) -> Outcome:
        self.passes.append((tj, trigger))
        return self.outcome

    def change(self, body: dict[str, Any], patch: kopf.Patch) -> None:
        asyncio.run(self.handlers.on_change(cast(kopf.Body, body), patch, self.memo))

    def reconciled(self, result: str) -> float:
        labels = {"kind": "TrainingJob", "result": result}
        value = self.metrics.registry.get_sample_value("mlcycle_reconcile_total", labels)
        return 0.0 if value is None else value


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The Events posted, as (type, reason): kopf posts them only inside its own loop."""
    events: list[tuple[str, str]] = []

    def record(_body: Any, *, type: str, reason: str, message: str = "") -> None:
        events.append((type, reason))

    monkeypatch.setattr(kopf, "event", record)
    return events


def test_an_invalid_spec_becomes_the_invalid_spec_condition_never_a_pass(
    posted: list[tuple[str, str]],
) -> None:
    kind = Kind()
    patch = kopf.Patch()

    kind.change(INVALID.body(), patch)

    assert kind.passes == []
    [accepted] = patch["status"]["conditions"]
    assert (accepted["type"], accepted["status"], accepted["reason"]) == (
        reasons.ACCEPTED,
        "False",
        reasons.INVALID_SPEC,
    )
    assert "spec.workers" in accepted["message"]
    assert posted == [("Warning", reasons.INVALID_SPEC)]


def test_a_pass_posts_its_events_and_asks_kopf_to_retry_after_its_delay(
    posted: list[tuple[str, str]],
) -> None:
    kind = Kind(Outcome([EventIntent("Normal", reasons.RUN_BOUND, "run bound")], 3.0))

    with pytest.raises(kopf.TemporaryError) as retry:
        kind.change(VALID.body(), kopf.Patch())

    assert retry.value.delay == 3.0
    assert posted == [("Normal", reasons.RUN_BOUND)]
    [(tj, trigger)] = kind.passes
    assert tj.metadata.uid == "uid-1"
    assert not trigger.resync
    assert kind.reconciled("success") == 1


def test_a_pass_with_nothing_to_wait_for_ends_the_handler(posted: list[tuple[str, str]]) -> None:
    kind = Kind(Outcome())

    kind.change(VALID.body(), kopf.Patch())

    assert len(kind.passes) == 1
    assert posted == []


def test_a_resync_tick_passes_as_a_resync_and_skips_an_invalid_object(
    posted: list[tuple[str, str]],
) -> None:
    kind = Kind(Outcome(retry_after=3.0))

    asyncio.run(kind.handlers.on_tick(VALID.body(), kind.memo, {}))
    asyncio.run(kind.handlers.on_tick(INVALID.body(), kind.memo, {}))

    [(_, trigger)] = kind.passes  # the tick's retry is the next tick: nothing raised
    assert trigger.resync


def test_a_deletion_forgets_the_memory_record_even_of_an_invalid_object() -> None:
    kind = Kind()
    kind.memory.of("uid-1").written_status = {"phase": "Running"}

    deleted = kind.handlers.deleted(cast(kopf.Body, VALID.body()), kind.memo)

    assert deleted is not None
    assert deleted.metadata.name == "train"
    assert "uid-1" not in kind.memory

    kind.memory.of("uid-1")
    assert kind.handlers.deleted(cast(kopf.Body, INVALID.body()), kind.memo) is None
    assert "uid-1" not in kind.memory


# kopf keeps each object's handler progress in annotations under these ids, and a handler
# with `requires_finalizer` is what adds the finalizer: changing either changes what an
# upgraded operator does to the objects already there.
HANDLERS = [
    ("train-create", "create", None, None),
    ("train-update", "update", None, None),
    ("train-resume", None, None, None),
    ("train-delete", "delete", True, "run_may_be_open"),
    ("train-forget", "delete", False, "run_closed"),
    ("mv-create", "create", None, None),
    ("mv-update", "update", None, None),
    ("mv-resume", None, None, None),
    ("mv-delete", "delete", True, "acts_in_mlflow"),
    ("mv-forget", "delete", False, "nothing_in_mlflow"),
    ("isvc-create", "create", None, None),
    ("isvc-update", "update", None, None),
    ("isvc-resume", None, None, None),
    ("isvc-delete", "delete", False, None),
]


def test_every_handler_id_and_finalizer_policy_is_kept() -> None:
    registry = build_registry()
    # kopf has no public listing of a registry's handlers.
    found = [
        (
            handler.id,
            handler.reason,
            handler.requires_finalizer,
            getattr(handler.when, "__name__", None),
        )
        for handler in registry._changing.get_all_handlers()
    ]
    assert found == HANDLERS
