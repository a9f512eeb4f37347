"""The MLflow Model Registry for the ModelVersion reconciler: registered models, versions,
their tags and aliases, and the runs and logged models versions are registered from.

Synchronous, like `tracking`: reconcilers call it through `asyncio.to_thread`. A version is
created with the owner's uid as the tag `mlcycle.dev/uid` in the create request itself, so
a version exists only together with the tag that finds it again after a crash, a timeout
whose request succeeded, or a lost status write.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
import requests
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlcycle.adapters.errors import NotFoundError, UnavailableError
from mlcycle.adapters.mlflowclient import (
    DATASET_VERSION_TAG,
    KIND_TAG,
    NAME_TAG,
    NOT_FOUND_CODES,
    UID_TAG,
    BasicAuth,
    client_uri,
    configure_mlflow_client,
    map_mlflow_error,
    mapped,
    quoted,
)


@dataclass(frozen=True)
class VersionRecord:
    """One version of a registered model, as the registry holds it now."""

    name: str
    version: str
    status: str
    """READY, PENDING_REGISTRATION or FAILED_REGISTRATION."""
    status_message: str
    source: str
    run_id: str | None
    model_id: str | None
    description: str | None
    creation_ms: int
    tags: dict[str, str]


@dataclass(frozen=True)
class RegisteredModelRecord:
    name: str
    aliases: dict[str, str]
    """Alias → version."""
    tags: dict[str, str]


@dataclass(frozen=True)
class SourceRun:
    """What registration and lineage need from a run."""

    run_id: str
    status: str
    experiment_id: str
    dataset_uri: str | None
    dataset_digest: str | None
    dataset_version: str | None
    training_job: str | None


@dataclass(frozen=True)
class Signature:
    inputs: str | None
    outputs: str | None


class MlflowRegistry:
    """The registry of one MLflow server (the tracking server itself)."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        basic_auth: BasicAuth | None = None,
        request_timeout_s: int = 5,
        max_retries: int = 0,
    ):
        configure_mlflow_client(request_timeout_s, max_retries)
        self.tracking_uri = tracking_uri
        self._client_uri = client_uri(tracking_uri, basic_auth)
        self._client = MlflowClient(tracking_uri=self._client_uri, registry_uri=self._client_uri)

    # ---- registered models ---------------------------------------------------------
    def ensure_registered_model(
        self, name: str, *, description: str | None, tags: Mapping[str, str]
    ) -> None:
        """Create `name` with `description` and `tags` unless it exists (then leave it be)."""
        try:
            self._client.create_registered_model(name, tags=dict(tags), description=description)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise map_mlflow_error(error, "create registered model") from None
        except (requests.exceptions.RequestException, OSError) as error:
            raise map_mlflow_error(error, "create registered model") from None

    def registered_model(self, name: str) -> RegisteredModelRecord | None:
        with mapped("get registered model"):
            try:
                model = self._client.get_registered_model(name)
            except MlflowException as error:
                if error.error_code in NOT_FOUND_CODES:
                    return None
                raise
        return RegisteredModelRecord(
            name=str(model.name),
            aliases={str(alias): str(version) for alias, version in (model.aliases or {}).items()},
            tags={str(key): str(value) for key, value in (model.tags or {}).items()},
        )

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        with mapped("set registered model tag"):
            self._client.set_registered_model_tag(name, key, value)

    def delete_model_tag(self, name: str, key: str) -> None:
        with mapped("delete registered model tag"):
            try:
                self._client.delete_registered_model_tag(name, key)
            except MlflowException as error:
                if error.error_code not in NOT_FOUND_CODES:
                    raise

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with mapped("set alias"):
            self._client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        with mapped("delete alias"):
            try:
                self._client.delete_registered_model_alias(name, alias)
            except MlflowException as error:
                if error.error_code not in NOT_FOUND_CODES:
                    raise

    # ---- versions ------------------------------------------------------------------
    def versions_owned_by(self, name: str, owner_uid: str) -> list[VersionRecord]:
        """Every version of `name` tagged with the owner's uid, oldest first."""
        query = f"name = '{quoted(name)}' and tags.`{UID_TAG}` = '{quoted(owner_uid)}'"
        with mapped("search model versions"):
            found = self._client.search_model_versions(query, max_results=50)
        records = [_version_record(version) for version in found]
        return sorted(records, key=lambda record: (record.creation_ms, int(record.version)))

    def get_version(self, name: str, version: str) -> VersionRecord | None:
        with mapped("get model version"):
            try:
                return _version_record(self._client.get_model_version(name, version))
            except MlflowException as error:
                if error.error_code in NOT_FOUND_CODES:
                    return None
                raise

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
        """A new version; callers search by owner first (`versions_owned_by`)."""
        with mapped("create model version"):
            created = self._client.create_model_version(
                name,
                source,
                run_id=run_id,
                # The uid travels in the create request: no window where the version exists
                # without the tag that finds it again.
                tags={**tags, UID_TAG: owner_uid},
                description=description,
                # READY is awaited by the reconciler between reconciles, never in a thread.
                await_creation_for=0,
                model_id=model_id,
            )
        return _version_record(created)

    def adopt_version(self, name: str, version: str, *, owner_uid: str) -> VersionRecord:
        """Tag a version registered elsewhere with the owner's uid: from now on it is found
        like one mlcycle created, and never registered again."""
        with mapped("tag adopted model version"):
            self._client.set_model_version_tag(name, version, UID_TAG, owner_uid)
        adopted = self.get_version(name, version)
        if adopted is None:
            raise NotFoundError(f"version {version} of {name} disappeared while adopted")
        return adopted

    def delete_version(self, name: str, version: str) -> None:
        with mapped("delete model version"):
            try:
                self._client.delete_model_version(name, version)
            except MlflowException as error:
                if error.error_code not in NOT_FOUND_CODES:
                    raise

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        with mapped("set model version tag"):
            self._client.set_model_version_tag(name, version, key, value)

    def delete_version_tag(self, name: str, version: str, key: str) -> None:
        with mapped("delete model version tag"):
            try:
                self._client.delete_model_version_tag(name, version, key)
            except MlflowException as error:
                if error.error_code not in NOT_FOUND_CODES:
                    raise

    def set_description(self, name: str, version: str, description: str) -> None:
        with mapped("update model version"):
            self._client.update_model_version(name, version, description=description)

    def signature(self, name: str, version: str) -> Signature | None:
        """The `signature` of the version's MLmodel file, when the model has one."""
        with mapped("get model download location"):
            location = self._client.get_model_version_download_uri(name, version)
        with _scratch_directory() as scratch:
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{location.rstrip('/')}/MLmodel",
                    dst_path=scratch,
                    tracking_uri=self._client_uri,
                    registry_uri=self._client_uri,
                )
                document = yaml.safe_load(Path(path).read_text())
            except MlflowException as error:
                if error.error_code in NOT_FOUND_CODES:
                    return None
                raise map_mlflow_error(error, "download MLmodel") from None
            except Exception as error:
                # Artifact stores raise their own errors (botocore's NoCredentialsError,
                # yaml's parse errors) beside MLflow's; none may leave unmapped.
                raise map_mlflow_error(error, "download MLmodel") from None
        signature = (document or {}).get("signature") if isinstance(document, dict) else None
        if not isinstance(signature, dict):
            return None
        return Signature(
            inputs=_text(signature.get("inputs")), outputs=_text(signature.get("outputs"))
        )

    # ---- sources -------------------------------------------------------------------
    def source_run(self, run_id: str) -> SourceRun:
        with mapped("get run"):
            run = self._client.get_run(run_id)
        if run.info.lifecycle_stage == "deleted":
            raise NotFoundError(f"run {run_id} is deleted")
        tags = run.data.tags or {}
        # A run a TrainingJob created says so in the tags the tracking adapter set.
        training_job = tags.get(NAME_TAG) if tags.get(KIND_TAG) == "TrainingJob" else None
        dataset = next(iter(run.inputs.dataset_inputs), None) if run.inputs else None
        uri = digest = version = None
        if dataset is not None:
            digest = str(dataset.dataset.digest) or None
            version = next(
                (tag.value for tag in dataset.tags if tag.key == DATASET_VERSION_TAG), None
            )
            try:
                uri = json.loads(dataset.dataset.source).get("uri")
            except (ValueError, AttributeError):
                uri = None
        return SourceRun(
            run_id=str(run.info.run_id),
            status=str(run.info.status),
            experiment_id=str(run.info.experiment_id),
            dataset_uri=uri,
            dataset_digest=digest,
            dataset_version=version,
            training_job=training_job,
        )

    def logged_model_id(self, experiment_id: str, run_id: str, name: str) -> str | None:
        """The MLflow 3 LoggedModel called `name` that `run_id` logged, if there is one."""
        query = f"source_run_id = '{quoted(run_id)}' AND name = '{quoted(name)}'"
        with mapped("search logged models"):
            found = self._client.search_logged_models(
                experiment_ids=[experiment_id], filter_string=query, max_results=10
            )
        models = sorted(found, key=lambda model: (model.creation_timestamp or 0, model.model_id))
        return str(models[0].model_id) if models else None


@contextlib.contextmanager
def _scratch_directory() -> Iterator[str]:
    """A temporary directory under TMPDIR (/tmp): the operator's only writable place when
    its root filesystem is read-only. A /tmp that is missing, full or read-only is the
    operator's configuration, reported like an unreachable service rather than raised."""
    try:
        scratch = tempfile.TemporaryDirectory()
    except OSError as error:
        raise UnavailableError(
            "scratch space", f"cannot create a directory under {tempfile.gettempdir()}: {error}"
        ) from None
    with scratch as path:
        yield path


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _version_record(version: Any) -> VersionRecord:
    return VersionRecord(
        name=str(version.name),
        version=str(version.version),
        status=str(version.status),
        status_message=str(version.status_message or ""),
        source=str(version.source or ""),
        run_id=str(version.run_id) if version.run_id else None,
        model_id=str(version.model_id) if getattr(version, "model_id", None) else None,
        description=str(version.description) if version.description else None,
        creation_ms=int(version.creation_timestamp or 0),
        tags={str(key): str(value) for key, value in (version.tags or {}).items()},
    )


__all__ = ["MlflowRegistry", "RegisteredModelRecord", "Signature", "SourceRun", "VersionRecord"]
