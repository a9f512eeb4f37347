"""kopf registrations for ModelVersion; bodies only delegate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from mlcycle.api.v1alpha1 import GROUP, VERSION, ModelVersion
from mlcycle.handlers.kind import KindHandlers, Trigger
from mlcycle.handlers.resync import Resync
from mlcycle.reconcile.modelversion import (
    ModelVersionDeps,
    finalize_modelversion,
    reconcile_modelversion,
)
from mlcycle.reconcile.outcome import Outcome

# MLflow has no watch: a resync is how a TrainingJob finishing or a run ending is noticed,
# and (at the operator's drift interval, for Ready objects) an alias or tag changed in
# MLflow directly.
RESYNC_SECONDS = 10.0

MODEL_VERSIONS_INDEX = "modelversions_by_uid"


def _deps(memo: Any) -> ModelVersionDeps:
    model_versions: ModelVersionDeps = memo.context.model_versions
    return model_versions


async def _reconcile(mv: ModelVersion, trigger: Trigger) -> Outcome:
    return await reconcile_modelversion(mv, _deps(trigger.memo), trigger.now, resync=trigger.resync)


def register_modelversion(registry: kopf.OperatorRegistry) -> None:
    plural = ModelVersion.plural()
    handlers = KindHandlers(
        ModelVersion,
        handler_prefix="mv",
        reconcile=_reconcile,
        memory=lambda memo: _deps(memo).memory,
        resync=Resync("ModelVersion", RESYNC_SECONDS),
        waiting_on="MLflow",
    )

    @kopf.index(GROUP, VERSION, plural, registry=registry, id=MODEL_VERSIONS_INDEX)
    def index_model_version(uid: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {uid: body}

    handlers.register(registry, MODEL_VERSIONS_INDEX)

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
        mv = handlers.deleted(body, memo)
        if mv is None:
            return
        delay = await finalize_modelversion(mv, _deps(memo), retry)
        if delay is not None:
            raise kopf.TemporaryError("MLflow unavailable; deletion policy pending", delay=delay)
