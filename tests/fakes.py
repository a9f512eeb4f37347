"""In-memory fakes of the adapters the reconcilers call: the Kubernetes API (ClusterClient),
MLflow tracking (MlflowTracking) and the MLflow registry (MlflowRegistry).

Each fake subclasses the adapter it stands for and overrides every public method, so mypy
holds it to the adapter's signatures; nothing of the real client is constructed. The fakes
keep state as the real services do (objects by name, runs and versions by the uid tag),
count the calls that write, and raise the adapters' own errors when told to: `down`
(UnavailableError) on the MLflow fakes, `refuse` (InvalidError) on the cluster.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections import Counter
from collections.abc import Mapping
from typing import Any

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.adapters.errors import InvalidError, NotFoundError, UnavailableError
from mlcycle.adapters.mlflowclient import SERVICE, UID_TAG
from mlcycle.adapters.registry import (
    MlflowRegistry,
    RegisteredModelRecord,
    Signature,
    SourceRun,
    VersionRecord,
)
from mlcycle.adapters.tracking import (
    ChampionRecord,
    DatasetInput,
    MlflowTracking,
    RunRecord,
    RunSnapshot,
    TerminalStatus,
)

ObjectKey = tuple[str, str, str]
"""(kind, namespace, name)."""


def _merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386, as the API server applies a status merge patch: null removes a field."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeCluster(ClusterClient):
    """The API server's objects by (kind, namespace, name). Apply keeps the stored status
    and metadata the server owns (uid), as server-side apply does; `refuse` maps a kind to
    the message its applies are refused with."""

    def __init__(self) -> None:  # no API client: nothing real is constructed
        self.objects: dict[ObjectKey, dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        """Every manifest sent, refused ones included, in order."""
        self.deleted: list[ObjectKey] = []
        self.status_patches: list[tuple[ObjectKey, dict[str, Any]]] = []
        self.refuse: dict[str, str] = {}
        self._uids = itertools.count(1)

    def store(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Puts an object in place as a user's `kubectl apply` would (a test's setup)."""
        stored = copy.deepcopy(dict(body))
        metadata = stored.setdefault("metadata", {})
        metadata.setdefault("uid", f"uid-{next(self._uids)}")
        self.objects[_key(stored)] = stored
        return copy.deepcopy(stored)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(body) for key, body in self.objects.items() if key[0] == kind]

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.applied.append(copy.deepcopy(dict(manifest)))
        kind = str(manifest["kind"])
        if kind in self.refuse:
            raise InvalidError(self.refuse[kind])
        key = _key(manifest)
        previous = self.objects.get(key)
        stored = copy.deepcopy(dict(manifest))
        metadata = stored.setdefault("metadata", {})
        if previous is not None:
            metadata["uid"] = previous["metadata"]["uid"]
            if "status" in previous:
                stored["status"] = previous["status"]
        else:
            metadata["uid"] = f"uid-{next(self._uids)}"
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        return [
            copy.deepcopy(body)
            for (found_kind, found_namespace, _), body in self.objects.items()
            if found_kind == kind
            and found_namespace == namespace
            and wanted.items() <= (body["metadata"].get("labels") or {}).items()
        ]

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, *, uid: str | None = None
    ) -> None:
        key = (kind, namespace, name)
        found = self.objects.get(key)
        if found is None or (uid is not None and found["metadata"].get("uid") != uid):
            return  # the real client ignores 404 and a failed uid precondition (409) too
        del self.objects[key]
        self.deleted.append(key)

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = (kind, namespace, name)
        found = self.objects.get(key)
        if found is None:
            raise NotFoundError(f"{kind} {namespace}/{name} not found")
        self.status_patches.append((key, copy.deepcopy(dict(status))))
        _merge_patch(found.setdefault("status", {}), status)
        return copy.deepcopy(found["status"])


def _key(body: Mapping[str, Any]) -> ObjectKey:
    metadata = body["metadata"]
    return str(body["kind"]), str(metadata.get("namespace")), str(metadata["name"])


class FakeTracking(MlflowTracking):
    """Experiments and runs of one MLflow server; runs are found again by their uid tag."""

    def __init__(self, tracking_uri: str = "http://mlflow.test") -> None:
        self.tracking_uri = tracking_uri
        self.down = False
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        """By run id: experiment_id, status, tags, params, metrics."""
        self.champions: dict[tuple[str, str], ChampionRecord] = {}
        self.calls: Counter[str] = Counter()

    def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.down:
            raise UnavailableError(SERVICE, f"{operation}: connection refused")

    def ensure_experiment(self, name: str) -> str:
        self._call("ensure_experiment")
        return self.experiments.setdefault(name, str(len(self.experiments) + 1))

    def ensure_run(
        self,
        *,
        experiment_name: str,
        run_name: str,
        owner_uid: str,
        owner_tags: Mapping[str, str],
        extra_tags: Mapping[str, str],
        params: Mapping[str, str],
        dataset: DatasetInput | None,
    ) -> RunRecord:
        self._call("ensure_run")
        experiment_id = self.experiments.setdefault(experiment_name, str(len(self.experiments) + 1))
        run_id = next(
            (run_id for run_id, run in self.runs.items() if run["tags"].get(UID_TAG) == owner_uid),
            None,
        )
        if run_id is None:
            self.calls["create_run"] += 1
            run_id = f"{len(self.runs) + 1:032x}"
            self.runs[run_id] = {
                "experiment_id": experiment_id,
                "status": "RUNNING",
                "tags": {**extra_tags, **owner_tags, UID_TAG: owner_uid, "name": run_name},
                "params": dict(params),
                "metrics": {},
            }
        return RunRecord(run_id, experiment_id, "RUNNING", f"s3://artifacts/{run_id}", 0)

    def terminate_run(self, run_id: str, status: TerminalStatus) -> None:
        self._call("terminate_run")
        self._run(run_id)["status"] = status

    def finish_run(self, run_id: str, status: TerminalStatus) -> dict[str, float]:
        self._call("finish_run")
        run = self._run(run_id)
        run["status"] = status
        return dict(run["metrics"])

    def get_run(self, run_id: str) -> RunSnapshot:
        self._call("get_run")
        run = self._run(run_id)
        return RunSnapshot(
            run_id,
            run["status"],
            dict(run["metrics"]),
            dict(run["params"]),
            dict(run["tags"]),
            f"s3://artifacts/{run_id}",
        )

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.tracking_uri}/#/experiments/{experiment_id}/runs/{run_id}"

    def champion(self, model_name: str, alias: str, metric: str) -> ChampionRecord | None:
        self._call("champion")
        return self.champions.get((model_name, alias))

    def _run(self, run_id: str) -> dict[str, Any]:
        if run_id not in self.runs:
            raise NotFoundError(f"run {run_id} not found")
        return self.runs[run_id]


class FakeRegistry(MlflowRegistry):
    """Registered models and their versions, tags and aliases; `source_runs` are the runs
    versions may be registered from. New versions are READY at once unless `registering`."""

    def __init__(self, tracking_uri: str = "http://mlflow.test") -> None:
        self.tracking_uri = tracking_uri
        self.down = False
        self.registering = False
        self.models: dict[str, RegisteredModelRecord] = {}
        self.versions: dict[tuple[str, str], VersionRecord] = {}
        self.source_runs: dict[str, SourceRun] = {}
        self.signatures: dict[tuple[str, str], Signature] = {}
        self.calls: Counter[str] = Counter()

    def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.down:
            raise UnavailableError(SERVICE, f"{operation}: connection refused")

    # Registered models

    def ensure_registered_model(
        self, name: str, *, description: str | None, tags: Mapping[str, str]
    ) -> None:
        self._call("ensure_registered_model")
        self.models.setdefault(name, RegisteredModelRecord(name, {}, dict(tags)))

    def registered_model(self, name: str) -> RegisteredModelRecord | None:
        self._call("registered_model")
        return copy.deepcopy(self.models.get(name))

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("set_model_tag")
        self._model(name).tags[key] = value

    def delete_model_tag(self, name: str, key: str) -> None:
        self._call("delete_model_tag")
        self._model(name).tags.pop(key, None)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call("set_alias")
        self._model(name).aliases[alias] = version

    def delete_alias(self, name: str, alias: str) -> None:
        self._call("delete_alias")
        self._model(name).aliases.pop(alias, None)

    # Versions

    def versions_owned_by(self, name: str, owner_uid: str) -> list[VersionRecord]:
        self._call("versions_owned_by")
        owned = [
            found
            for (model, _), found in self.versions.items()
            if model == name and found.tags.get(UID_TAG) == owner_uid
        ]
        return copy.deepcopy(sorted(owned, key=lambda found: int(found.version)))

    def get_version(self, name: str, version: str) -> VersionRecord | None:
        self._call("get_version")
        return copy.deepcopy(self.versions.get((name, version)))

    def create_version(
        self,
        name: str,
        *,
        source: str,
        owner_uid: str,
        tags: Mapping[str, str],
        run_id: str | None,
        model_id: str | None,
        description: str | None,
    ) -> VersionRecord:
        self._call("create_version")
        self._model(name)
        version = str(1 + sum(1 for model, _ in self.versions if model == name))
        created = VersionRecord(
            name=name,
            version=version,
            status="PENDING_REGISTRATION" if self.registering else "READY",
            status_message="",
            source=source,
            run_id=run_id,
            model_id=model_id,
            description=description,
            creation_ms=int(version),
            tags={**tags, UID_TAG: owner_uid},
        )
        self.versions[(name, version)] = created
        return copy.deepcopy(created)

    def adopt_version(self, name: str, version: str, *, owner_uid: str) -> VersionRecord:
        self._call("adopt_version")
        self._version(name, version).tags[UID_TAG] = owner_uid
        return copy.deepcopy(self._version(name, version))

    def delete_version(self, name: str, version: str) -> None:
        self._call("delete_version")
        self.versions.pop((name, version), None)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call("set_version_tag")
        self._version(name, version).tags[key] = value

    def delete_version_tag(self, name: str, version: str, key: str) -> None:
        self._call("delete_version_tag")
        self._version(name, version).tags.pop(key, None)

    def set_description(self, name: str, version: str, description: str) -> None:
        self._call("set_description")
        found = self._version(name, version)
        self.versions[(name, version)] = dataclasses.replace(found, description=description)

    def signature(self, name: str, version: str) -> Signature | None:
        self._call("signature")
        return self.signatures.get((name, version))

    # Sources

    def source_run(self, run_id: str) -> SourceRun:
        self._call("source_run")
        if run_id not in self.source_runs:
            raise NotFoundError(f"run {run_id} not found")
        return self.source_runs[run_id]

    def logged_model_id(self, experiment_id: str, run_id: str, name: str) -> str | None:
        self._call("logged_model_id")
        return None

    def _model(self, name: str) -> RegisteredModelRecord:
        if name not in self.models:
            raise NotFoundError(f"registered model {name} not found")
        return self.models[name]

    def _version(self, name: str, version: str) -> VersionRecord:
        if (name, version) not in self.versions:
            raise NotFoundError(f"version {version} of {name} not found")
        return self.versions[(name, version)]
