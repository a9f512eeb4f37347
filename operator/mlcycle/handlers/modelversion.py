"""kopf registrations for ModelVersion; bodies only delegate."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, cast

import kopf
from pydantic import ValidationError

from mlcycle.api.v1alpha1 import GROUP, VERSION, ModelVersion
from mlcycle.handlers.acceptance import record_acceptance
from mlcycle.handlers.resync import Resync
from mlcycle.reconcile.modelversion import (
    ModelVersionDeps,
    ModelVersionOutcome,
    finalize_modelversion,
    reconcile_modelversion,
)

# MLflow has no watch: a resync is how a TrainingJob finishing or a run ending is noticed,
# and (at the operator's drift interval, for Ready objects) an alias or tag changed in
# MLflow directly.
RESYNC_SECONDS = 10.0

MODEL_VERSIONS_INDEX = "modelversions_by_uid"


def _deps(memo: Any) -> ModelVersionDeps:
    model_versions: ModelVersionDeps = memo.context.model_versions
    return model_versions


async def _reconcile_body(
    body: Mapping[str, Any], deps: ModelVersionDeps, resync: bool = False
) -> ModelVersionOutcome:
    mv = ModelVersion.from_body(body)
    outcome = await reconcile_modelversion(
        mv, deps, datetime.datetime.now(datetime.UTC), resync=resync
    )
    for event in outcome.events:
        kopf.event(
            cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message
        )
    return outcome


def register_modelversion(registry: kopf.OperatorRegistry) -> None:
    plural = ModelVersion.plural()
    resyncs = Resync("ModelVersion", RESYNC_SECONDS)

    @kopf.index(GROUP, VERSION, plural, registry=registry, id=MODEL_VERSIONS_INDEX)
    def index_model_version(uid: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {uid: body}

    async def on_change(body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any) -> None:
        resyncs.follow(body["metadata"]["uid"])
        try:
            with memo.context.metrics.reconciling("ModelVersion"):
                outcome = await _reconcile_body(body, _deps(memo))
        except ValidationError:
            record_acceptance(ModelVersion, body, patch)  # InvalidSpec, as for every kind
            return
        if outcome.retry_after is not None:
            raise kopf.TemporaryError("waiting on MLflow", delay=outcome.retry_after)

    for cause, register in (
        ("create", kopf.on.create),
        ("update", kopf.on.update),
        ("resume", kopf.on.resume),
    ):
        register(GROUP, VERSION, plural, registry=registry, id=f"mv-{cause}")(on_change)

    async def resync(body: Mapping[str, Any], memo: Any, _indexes: Mapping[str, Any]) -> None:
        await _reconcile_body(body, _deps(memo), resync=True)

    resyncs.register(registry, MODEL_VERSIONS_INDEX, resync)

    def acts_in_mlflow(spec: Mapping[str, Any], **_: Any) -> bool:
        return spec.get("deletionPolicy", "Retain") != "Retain" or bool(spec.get("aliases"))

    def nothing_in_mlflow(spec: Mapping[str, Any], **kwargs: Any) -> bool:
        return not acts_in_mlflow(spec, **kwargs)

    # The finalizer guards MLflow: a deletion policy to apply (Archive, Delete) or alias
    # claims to give up. A retained version without aliases needs none, so its handler is
    # optional.
    @kopf.on.delete(
        GROUP,
        VERSION,
        plural,
        registry=registry,
        id="mv-forget",
        when=nothing_in_mlflow,
        optional=True,
    )
    @kopf.on.delete(GROUP, VERSION, plural, registry=registry, id="mv-delete", when=acts_in_mlflow)
    async def on_delete(body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
        resyncs.forget(body["metadata"]["uid"])
        try:
            mv = ModelVersion.from_body(body)
        except ValidationError:
            return
        delay = await finalize_modelversion(mv, _deps(memo), retry)
        if delay is not None:
            raise kopf.TemporaryError("MLflow unavailable; deletion policy pending", delay=delay)
