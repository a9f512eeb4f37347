"""kopf registrations for InferenceService and the Deployments and pods it owns; bodies
only delegate.

Deployments and pods are kept in kopf indexes fed by the watches: a rollout tick reads its
children from memory, and the routers' metrics only when an analysis is due.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from mlcycle.api.v1alpha1 import GROUP, VERSION, InferenceService, ModelVersion
from mlcycle.handlers.kind import KindHandlers, Trigger
from mlcycle.handlers.resync import Resync
from mlcycle.plan.serving_names import INFERENCESERVICE_UID_LABEL
from mlcycle.reconcile.inferenceservice import (
    InferenceServiceDeps,
    forget_inferenceservice,
    reconcile_inferenceservice,
)
from mlcycle.reconcile.outcome import Outcome

# The rollout clock: a step decision is made within this long of its interval ending, and
# a Deployment becoming ready is noticed within it. Each tick reads only the indexes.
TICK_SECONDS = 1.0

DEPLOYMENTS_INDEX = "inferenceservice_deployments"
PODS_INDEX = "inferenceservice_pods"
MODEL_VERSIONS_INDEX = "inferenceservice_modelversions"
TRACKED_VERSIONS_INDEX = "inferenceservice_tracked_versions"
SERVICES_INDEX = "inferenceservices_by_uid"

_ONE_OF_OURS = {INFERENCESERVICE_UID_LABEL: kopf.PRESENT}


class IndexedChildren:
    def __init__(
        self,
        deployments: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
        model_versions: kopf.Index[Any, Any],
        tracked_versions: kopf.Index[Any, Any],
    ) -> None:
        self._deployments = deployments
        self._pods = pods
        self._model_versions = model_versions
        self._tracked_versions = tracked_versions

    def model_version(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = (namespace, name)
        return next(iter(self._model_versions[key]), None) if key in self._model_versions else None

    def model_versions_tracking(self, model_name: str, version: str) -> Sequence[Mapping[str, Any]]:
        key = (model_name, version)
        return list(self._tracked_versions[key]) if key in self._tracked_versions else []

    def deployments(self, uid: str) -> Sequence[Mapping[str, Any]]:
        return list(self._deployments[uid]) if uid in self._deployments else []

    def pods(self, uid: str) -> Sequence[Mapping[str, Any]]:
        return list(self._pods[uid]) if uid in self._pods else []


def _deps(memo: Any) -> InferenceServiceDeps:
    deps: InferenceServiceDeps = memo.context.inference_services
    return deps


async def _reconcile(isvc: InferenceService, trigger: Trigger) -> Outcome:
    indexes = trigger.indexes
    children = IndexedChildren(
        indexes[DEPLOYMENTS_INDEX],
        indexes[PODS_INDEX],
        indexes[MODEL_VERSIONS_INDEX],
        indexes[TRACKED_VERSIONS_INDEX],
    )
    return await reconcile_inferenceservice(isvc, _deps(trigger.memo), children, trigger.now)


def register_inferenceservice(registry: kopf.OperatorRegistry) -> None:
    plural = InferenceService.plural()
    handlers = KindHandlers(
        InferenceService,
        handler_prefix="isvc",
        reconcile=_reconcile,
        memory=lambda memo: _deps(memo).memory,
        # Annotations (promote, abort, retry) do not reach update handlers (kopf diffs
        # the spec); the tick picks them up within TICK_SECONDS.
        resync=Resync("InferenceService", TICK_SECONDS),
        waiting_on="the rollout",
    )

    @kopf.index(GROUP, VERSION, plural, registry=registry, id=SERVICES_INDEX)
    def index_service(uid: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {uid: body}

    @kopf.index(
        "apps", "v1", "deployments", registry=registry, labels=_ONE_OF_OURS, id=DEPLOYMENTS_INDEX
    )
    def index_deployment(labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {labels[INFERENCESERVICE_UID_LABEL]: body}

    @kopf.index("", "v1", "pods", registry=registry, labels=_ONE_OF_OURS, id=PODS_INDEX)
    def index_pod(labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {labels[INFERENCESERVICE_UID_LABEL]: body}

    @kopf.index(GROUP, VERSION, ModelVersion.plural(), registry=registry, id=MODEL_VERSIONS_INDEX)
    def index_model_version(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, name): body}

    # By the registry version a ModelVersion tracks: whoever approved that version, however
    # an InferenceService names it.
    @kopf.index(GROUP, VERSION, ModelVersion.plural(), registry=registry, id=TRACKED_VERSIONS_INDEX)
    def index_tracked_version(
        spec: Mapping[str, Any], status: Mapping[str, Any], body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        version = status.get("version")
        # Empty rather than None: kopf keeps an object's previous keys when given None.
        return {(spec.get("modelName"), str(version)): body} if version else {}

    handlers.register(registry, SERVICES_INDEX)

    @kopf.on.delete(GROUP, VERSION, plural, registry=registry, id="isvc-delete", optional=True)
    async def on_delete(body: kopf.Body, memo: Any, **_: Any) -> None:
        isvc = handlers.deleted(body, memo)
        if isvc is not None:
            forget_inferenceservice(isvc, _deps(memo))
