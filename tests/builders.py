"""Test objects of the three kinds, built by builders on a fixed clock.

Written as a reader would describe them, in the style of kueue's
`utiltesting.MakeWorkload(...).Queue(...).Obj()`:

    job = a_training_job("iris").workers(2).registration("iris", aliases=["challenger"]).obj()
    isvc = an_inference_service("iris").model("iris", version=2).stable("1").canary("2").obj()

Builders are immutable: every method returns a new builder, so a test module keeps one base
builder and derives each test's object from it. Fields are named in Python (`backoff_limit`)
or on the wire (`backoffLimit`); values are wire form or API models. A field set to None is
left out. Unknown fields are kept, so a test may build an object the schema refuses.

- `obj()`: the typed API model, parsed (and validated) as the operator parses a body;
- `body()`: the object as the apiserver stores it and kopf hands it over (metadata with
  uid and generation, status);
- `manifest()`: what a user applies: name, labels, annotations and spec only.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, Self, TypeVar, get_args

from pydantic import BaseModel

from mlcycle.api.v1alpha1 import (
    API_VERSION,
    Condition,
    CustomResource,
    InferenceService,
    InferenceServiceSpec,
    InferenceServiceStatus,
    ModelVersion,
    ModelVersionSpec,
    ModelVersionStatus,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
)
from mlcycle.api.v1alpha1.inferenceservice import TrackStatus
from mlcycle.api.v1alpha1.trainingjob import Registration

__all__ = [
    "NOW",
    "RUN_ID",
    "InferenceServiceBuilder",
    "ModelVersionBuilder",
    "ResourceBuilder",
    "TrainingJobBuilder",
    "a_condition",
    "a_model_version",
    "a_training_job",
    "an_inference_service",
    "canary_track",
    "earlier",
    "later",
    "stable_track",
    "wire_time",
]

# --- The clock ------------------------------------------------------------------------------

NOW: Final = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
"""The moment every test's clock reads; planners take it as their `now`."""

RUN_ID: Final = "0123456789abcdef0123456789abcdef"
"""An MLflow run id, of the shape MLflow gives."""


def later(seconds: float = 0, *, minutes: float = 0) -> datetime.datetime:
    """`NOW` plus a while."""
    return NOW + datetime.timedelta(seconds=seconds, minutes=minutes)


def earlier(seconds: float = 0, *, minutes: float = 0) -> datetime.datetime:
    """`NOW` minus a while."""
    return NOW - datetime.timedelta(seconds=seconds, minutes=minutes)


def wire_time(moment: datetime.datetime) -> str:
    """A time as the apiserver writes it: RFC 3339 in UTC with a `Z`."""
    return moment.isoformat().replace("+00:00", "Z")


def a_condition(
    type_: str,
    status: str,
    reason: str,
    *,
    message: str = "",
    at: datetime.datetime = NOW,
    observed_generation: int | None = None,
) -> Condition:
    """A condition as the operator records it; `at` is its lastTransitionTime."""
    return Condition.model_validate(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": at,
            "observedGeneration": observed_generation,
        }
    )


# --- Wire form ------------------------------------------------------------------------------


def _wire(value: Any) -> Any:
    """A value as it appears in a body: times in RFC 3339, API models by their aliases."""
    if isinstance(value, datetime.datetime):
        return wire_time(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, Mapping):
        return {key: _wire(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_wire(item) for item in value]
    return value


def _wire_name(model: type[BaseModel], name: str) -> str:
    field = model.model_fields.get(name)
    return field.alias if field is not None and field.alias else name


def _merged(target: dict[str, Any], model: type[BaseModel], fields: Mapping[str, Any]) -> None:
    """Sets `fields` (Python or wire names) on the wire-form `target`; None removes a field."""
    for name, value in fields.items():
        key = _wire_name(model, name)
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _wire(value)


# --- The builders ---------------------------------------------------------------------------

R = TypeVar("R", bound=CustomResource)


class ResourceBuilder(Generic[R]):
    """What every kind's builder has: metadata, spec and status fields, the three outputs."""

    kind: type[R]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]

    def __init__(self, name: str, namespace: str, spec: Mapping[str, Any]) -> None:
        self._body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": self.kind.kind_name(),
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1", "generation": 1},
            "spec": _wire(spec),
        }

    def _changed(self, change: Callable[[dict[str, Any]], None]) -> Self:
        clone = copy.copy(self)
        clone._body = copy.deepcopy(self._body)
        change(clone._body)
        return clone

    def _spec_field(self, name: str, **fields: Any) -> Self:
        """Sets fields of the spec's sub-object `name` (a wire name), keeping the others."""

        def change(body: dict[str, Any]) -> None:
            section = body["spec"].setdefault(name, {})
            _merged(section, _section_model(self.spec_model, name), fields)

        return self._changed(change)

    # Metadata

    def named(self, name: str) -> Self:
        return self._changed(lambda body: body["metadata"].update(name=name))

    def namespace(self, namespace: str) -> Self:
        return self._changed(lambda body: body["metadata"].update(namespace=namespace))

    def uid(self, uid: str) -> Self:
        return self._changed(lambda body: body["metadata"].update(uid=uid))

    def generation(self, generation: int) -> Self:
        return self._changed(lambda body: body["metadata"].update(generation=generation))

    def labels(self, labels: Mapping[str, str]) -> Self:
        return self._changed(lambda body: body["metadata"].setdefault("labels", {}).update(labels))

    def annotations(self, annotations: Mapping[str, str]) -> Self:
        return self._changed(
            lambda body: body["metadata"].setdefault("annotations", {}).update(annotations)
        )

    def deleting(self, at: datetime.datetime = NOW) -> Self:
        """Deleted at `at`, held by a finalizer."""
        return self._changed(lambda body: body["metadata"].update(deletionTimestamp=wire_time(at)))

    # Spec and status

    def spec(self, **fields: Any) -> Self:
        """Sets whole spec fields, replacing what was there (None removes the field)."""
        return self._changed(lambda body: _merged(body["spec"], self.spec_model, fields))

    def status(self, **fields: Any) -> Self:
        """Sets status fields (None removes one); `status()` alone gives an empty status."""
        return self._changed(
            lambda body: _merged(body.setdefault("status", {}), self.status_model, fields)
        )

    def condition(
        self,
        type_: str,
        status: str,
        reason: str,
        *,
        message: str = "",
        at: datetime.datetime = NOW,
        observed_generation: int | None = None,
    ) -> Self:
        """Records a condition in status, replacing one of the same type."""
        recorded = _wire(
            a_condition(
                type_,
                status,
                reason,
                message=message,
                at=at,
                observed_generation=observed_generation,
            )
        )

        def change(body: dict[str, Any]) -> None:
            conditions = body.setdefault("status", {}).setdefault("conditions", [])
            conditions[:] = [c for c in conditions if c["type"] != type_] + [recorded]

        return self._changed(change)

    # Outputs

    def obj(self) -> R:
        """The typed object, parsed and validated from `body()`."""
        return self.kind.from_body(self._body)

    def body(self) -> dict[str, Any]:
        """The stored object: metadata with uid and generation, spec, status."""
        return copy.deepcopy(self._body)

    def manifest(self) -> dict[str, Any]:
        """What a user applies: no namespace (kubectl's `-n` gives it), uid or status."""
        metadata = self._body["metadata"]
        kept = {key: metadata[key] for key in ("name", "labels", "annotations") if key in metadata}
        return {
            "apiVersion": self._body["apiVersion"],
            "kind": self._body["kind"],
            "metadata": copy.deepcopy(kept),
            "spec": copy.deepcopy(self._body["spec"]),
        }


def _section_model(model: type[BaseModel], wire_name: str) -> type[BaseModel]:
    """The API model of the field `wire_name` of `model` (optional or not)."""
    for field in model.model_fields.values():
        if field.alias == wire_name:
            for candidate in (field.annotation, *get_args(field.annotation)):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    return candidate
    return BaseModel


class TrainingJobBuilder(ResourceBuilder[TrainingJob]):
    kind = TrainingJob
    spec_model = TrainingJobSpec
    status_model = TrainingJobStatus

    def image(self, image: str) -> Self:
        return self.spec(image=image)

    def command(self, *command: str) -> Self:
        return self.spec(command=list(command))

    def workers(self, workers: int) -> Self:
        return self.spec(workers=workers)

    def backoff_limit(self, limit: int) -> Self:
        return self.spec(backoff_limit=limit)

    def suspended(self, suspend: bool = True) -> Self:
        return self.spec(suspend=suspend)

    def queue(self, queue_name: str) -> Self:
        """A Kueue LocalQueue admits it."""
        return self.spec(queue_name=queue_name)

    def hyperparameters(self, values: Mapping[str, str]) -> Self:
        return self.spec(hyperparameters=dict(values))

    def dataset(self, uri: str, *, digest: str | None = None, version: str | None = None) -> Self:
        return self.spec(dataset={"uri": uri, "digest": digest, "version": version})

    def startup_deadline(self, seconds: int) -> Self:
        return self.spec(startup_deadline_seconds=seconds)

    def registration(self, model_name: str, **fields: Any) -> Self:
        """Registers the model as `model_name` when the training succeeds; `fields` are the
        other fields of `spec.register` (gates, aliases, compare_to...)."""
        register: dict[str, Any] = {"modelName": model_name}
        _merged(register, Registration, fields)
        return self.spec(registration=register)


class ModelVersionBuilder(ResourceBuilder[ModelVersion]):
    kind = ModelVersion
    spec_model = ModelVersionSpec
    status_model = ModelVersionStatus

    def model(self, model_name: str) -> Self:
        return self.spec(model_name=model_name)

    def from_run(self, run_id: str = RUN_ID, artifact_path: str | None = None) -> Self:
        return self.spec(source={"run": {"runId": run_id, "artifactPath": artifact_path}})

    def from_uri(self, uri: str) -> Self:
        return self.spec(source={"uri": uri})

    def from_version(self, version: int) -> Self:
        """Adopts a version registered outside mlcycle."""
        return self.spec(source={"version": version})

    def from_training_job(self, name: str) -> Self:
        return self.spec(source={"trainingJobRef": {"name": name}})

    def aliases(self, *aliases: str) -> Self:
        return self.spec(aliases=list(aliases))

    def alias_policy(self, policy: str) -> Self:
        return self.spec(alias_policy=policy)

    def approval(
        self,
        *,
        required: bool = True,
        approved_by: str | None = None,
        approved_at: datetime.datetime | None = None,
    ) -> Self:
        return self.spec(
            approval={"required": required, "approvedBy": approved_by, "approvedAt": approved_at}
        )


class InferenceServiceBuilder(ResourceBuilder[InferenceService]):
    kind = InferenceService
    spec_model = InferenceServiceSpec
    status_model = InferenceServiceStatus

    def model(self, name: str, *, version: int | None = None, alias: str | None = None) -> Self:
        """Serves a registered model: one version, or wherever an alias points."""
        return self.spec(model={"name": name, "version": version, "alias": alias})

    def model_version_ref(self, name: str) -> Self:
        """Serves the version a ModelVersion object registered."""
        return self.spec(model={"modelVersionRef": {"name": name}})

    def server(self, **fields: Any) -> Self:
        """Fields of `spec.server` (replicas, min_replicas, batching...); others are kept."""
        return self._spec_field("server", **fields)

    def replicas(self, replicas: int) -> Self:
        return self.server(replicas=replicas)

    def traffic(self, mode: str, gateway: Mapping[str, Any] | None = None) -> Self:
        """The traffic mode; `gateway` (the `spec.traffic.gateway` of mode gateway-api)."""
        return self.spec(traffic={"mode": mode, "gateway": gateway})

    def rollout(self, **fields: Any) -> Self:
        """Fields of `spec.rollout` (strategy, steps, interval, capacity, ab_test); others
        are kept."""
        return self._spec_field("rollout", **fields)

    def steps(self, *weights: int, interval: str | None = None) -> Self:
        """Canary weights in percent, each held for `interval` (when given)."""
        if interval is None:
            return self.rollout(steps=list(weights))
        return self.rollout(steps=list(weights), interval=interval)

    def analysis(self, **fields: Any) -> Self:
        """Fields of `spec.analysis` (min_requests, success_rate_min...); others are kept."""
        return self._spec_field("analysis", **fields)

    def promote_alias(self, alias: str) -> Self:
        """Moves `alias` to a version once it is promoted."""
        return self._spec_field("registry", promote_alias=alias)

    def paused(self, paused: bool = True) -> Self:
        return self.spec(paused=paused)

    # Status tracks

    def stable(self, version: str = "1", **fields: Any) -> Self:
        """The stable track in status (see `stable_track`), of the served model."""
        return self.status(stable=stable_track(version, self._model_name(), **fields))

    def canary(self, version: str = "2", **fields: Any) -> Self:
        """The canary track in status (see `canary_track`), of the served model."""
        return self.status(canary=canary_track(version, self._model_name(), **fields))

    def _model_name(self) -> str:
        name: str = self._body["spec"].get("model", {}).get("name", "iris")
        return name


def stable_track(version: str = "1", model: str = "iris", **fields: Any) -> dict[str, Any]:
    """A stable track in wire form: `version` of `model` at 100 % unless `fields`
    (TrackStatus fields) say otherwise."""
    return _track(version, model, {"weight": 100, **fields})


def canary_track(version: str = "2", model: str = "iris", **fields: Any) -> dict[str, Any]:
    """A canary track in wire form: `version` of `model` started at NOW, at step 0 with no
    weight and no failed check yet, unless `fields` (TrackStatus fields) say otherwise."""
    defaults = {"weight": 0, "step": 0, "failed_checks": 0, "started_at": NOW}
    return _track(version, model, {**defaults, **fields})


def _track(version: str, model: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    track: dict[str, Any] = {"version": version, "modelUri": f"models:/{model}/{version}"}
    _merged(track, TrackStatus, fields)
    return track


def a_training_job(name: str = "train", namespace: str = "ns") -> TrainingJobBuilder:
    """A TrainingJob of image `example/train:1` with uid `uid-1` at generation 1."""
    return TrainingJobBuilder(name, namespace, {"image": "example/train:1"})


def a_model_version(name: str = "iris-v1", namespace: str = "ns") -> ModelVersionBuilder:
    """Model `iris` from the model of run `RUN_ID`, with uid `uid-1` at generation 1."""
    return ModelVersionBuilder(
        name, namespace, {"modelName": "iris", "source": {"run": {"runId": RUN_ID}}}
    )


def an_inference_service(name: str = "iris", namespace: str = "ns") -> InferenceServiceBuilder:
    """Serving model `iris` at alias `champion` with the defaults of every other field,
    with uid `uid-1` at generation 1."""
    return InferenceServiceBuilder(
        name, namespace, {"model": {"name": "iris", "alias": "champion"}}
    )
