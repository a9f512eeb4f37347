"""MLflow tracking for the TrainingJob reconciler: experiments, runs, dataset inputs, metrics.

Synchronous on purpose (MLflow's client is): reconcilers call it through `asyncio.to_thread`.
Every write is idempotent by the owner's uid, carried as the run tag `mlcycle.dev/uid`, so a
crash between "created the run" and "recorded the run id in status" never makes a second run.

Errors leave this module only as `mlcycle.adapters.errors` types, with redacted messages.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import requests
from mlflow.entities import Dataset, InputTag, Param, ViewType
from mlflow.entities import DatasetInput as MlflowDatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlcycle.adapters.errors import InvalidError, UnavailableError
from mlcycle.adapters.mlflowclient import (
    DATASET_VERSION_TAG,
    NOT_FOUND_CODES,
    SERVICE,
    UID_TAG,
    BasicAuth,
    client_uri,
    configure_mlflow_client,
    map_mlflow_error,
    mapped,
    quoted,
)

# Limits of MLflow's stores (mlflow.utils.validation); exceeding them is an
# INVALID_PARAMETER_VALUE for the whole batch, so values are cut to fit instead.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_DATASET_DIGEST_LENGTH = 36
MAX_DATASET_NAME_LENGTH = 500

TerminalStatus = Literal["FINISHED", "FAILED", "KILLED"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"FINISHED", "FAILED", "KILLED"})


@dataclass(frozen=True)
class DatasetInput:
    """The training data a run consumed: logged as the run's dataset input for lineage."""

    uri: str
    digest: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    status: str
    artifact_uri: str
    start_time_ms: int


@dataclass(frozen=True)
class RunSnapshot:
    run_id: str
    status: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    artifact_uri: str


@dataclass(frozen=True)
class ChampionRecord:
    """The version an alias points to, as the champion gate compares against it."""

    version: str
    run_id: str | None
    source: str
    run_found: bool
    value: float | None = None
    """The compared metric of the version's run; None when that run did not log it."""


def run_url_for(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run, without the credentials or query the URI may hold."""
    parts = urllib.parse.urlsplit(tracking_uri)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def dataset_entity(dataset: DatasetInput) -> MlflowDatasetInput:
    """MLflow's dataset input for a URI, shaped like MLflow's own artifact dataset sources
    (`source_type` the scheme, `source` the JSON `{"uri": …}`) so its UI and
    `mlflow.data.get_source` read it back."""
    parsed = urllib.parse.urlsplit(dataset.uri)
    source_type = "s3" if parsed.scheme == "s3" else "uri"
    name = parsed.path.rstrip("/").rsplit("/", 1)[-1] or parsed.netloc or dataset.uri
    # MLflow requires a digest; without one the URI and version identify the data.
    digest = (
        dataset.digest
        or hashlib.sha256(f"{dataset.uri}\n{dataset.version or ''}".encode()).hexdigest()
    )
    tags = [InputTag(key="mlflow.data.context", value="training")]
    if dataset.version:
        tags.append(InputTag(key=DATASET_VERSION_TAG, value=dataset.version))
    return MlflowDatasetInput(
        dataset=Dataset(
            name=name[:MAX_DATASET_NAME_LENGTH],
            digest=digest[:MAX_DATASET_DIGEST_LENGTH],
            source_type=source_type,
            source=json.dumps({"uri": dataset.uri}),
        ),
        tags=tags,
    )


class MlflowTracking:
    """One MLflow tracking server, addressed by `tracking_uri`.

    Construction sets MLflow's HTTP timeout and retries for the whole process (see
    `configure_mlflow_client`): instances with different values share the last ones set.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        basic_auth: BasicAuth | None = None,
        request_timeout_s: int = 5,
        max_retries: int = 0,
    ):
        if request_timeout_s < 1 or max_retries < 0:
            raise ValueError("request_timeout_s must be >= 1 and max_retries >= 0")
        configure_mlflow_client(request_timeout_s, max_retries)
        self.tracking_uri = tracking_uri
        # The registry is the tracking server too; naming it keeps MLFLOW_REGISTRY_URI or a
        # process-wide `mlflow.set_registry_uri` from pointing the champion gate elsewhere.
        uri = client_uri(tracking_uri, basic_auth)
        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        # Experiment names resolve to the same id until someone deletes the experiment;
        # a run call refused for that reason drops the entry (see `ensure_run`).
        self._experiment_ids: dict[str, str] = {}

    # ---- experiments ---------------------------------------------------------------
    def ensure_experiment(self, name: str) -> str:
        """The id of the experiment called `name`, created when missing."""
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        experiment_id = self._resolve_experiment(name)
        self._experiment_ids[name] = experiment_id
        return experiment_id

    def _resolve_experiment(self, name: str) -> str:
        with mapped("get experiment"):
            experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return str(self._client.create_experiment(name))
            except MlflowException as error:
                # Another reconcile (or replica) created it between our get and create.
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise map_mlflow_error(error, "create experiment") from None
            except (requests.exceptions.RequestException, OSError) as error:
                raise map_mlflow_error(error, "create experiment") from None
            with mapped("get experiment"):
                experiment = self._client.get_experiment_by_name(name)
            if experiment is None:
                raise UnavailableError(SERVICE, f"experiment {name!r} exists but is not readable")
        if experiment.lifecycle_stage == "deleted":
            # As `mlflow.set_experiment` does: a deleted name is neither reused nor revived.
            raise InvalidError(
                f"experiment {name!r} is deleted in MLflow; restore it or delete it permanently"
            )
        return str(experiment.experiment_id)

    # ---- runs ----------------------------------------------------------------------
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
        """The owner's run, found by its uid tag or created; params and dataset logged once.

        Safe to call again after a crash at any point: a found run gets only what it lacks.
        """
        experiment_id = self.ensure_experiment(experiment_name)
        try:
            run = self._find_or_create_run(
                experiment_id, run_name, owner_uid, {**extra_tags, **owner_tags}
            )
            self._complete(run, params, dataset)
        except InvalidError:
            # Perhaps the experiment was deleted since it was resolved: look again next time.
            self._experiment_ids.pop(experiment_name, None)
            raise
        return _record(run)

    def _find_or_create_run(
        self, experiment_id: str, run_name: str, owner_uid: str, tags: Mapping[str, str]
    ) -> Any:
        existing = self._runs_of(experiment_id, owner_uid)
        if existing:
            run = self._adopt(existing)
        else:
            with mapped("create run"):
                # The uid tag travels in the create request itself: a run exists only
                # together with the tag that finds it again.
                run = self._client.create_run(
                    experiment_id, tags={**tags, UID_TAG: owner_uid}, run_name=run_name
                )
            active = [
                found
                for found in self._runs_of(experiment_id, owner_uid)
                if found.info.lifecycle_stage == "active"
            ]
            winner = _oldest(active) if active else run
            if winner.info.run_id != run.info.run_id:
                # Our first search missed a run made for this owner (a lagging read, or
                # another creator): the oldest active one stays, ours goes. This settles the
                # sequential cases for sure; two creators running at the same moment can
                # still each keep their own (one searched before the other's run became
                # visible). Reconcilers serialise ensure_run per owner (a lock per uid and
                # kopf peering), which is what rules that out.
                with mapped("delete duplicate run"):
                    self._client.delete_run(run.info.run_id)
                run = winner
        return run

    def _runs_of(self, experiment_id: str, owner_uid: str) -> list[Any]:
        with mapped("search runs"):
            found = self._client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{UID_TAG}` = '{quoted(owner_uid)}'",
                run_view_type=ViewType.ALL,
                max_results=50,
                order_by=["attributes.start_time ASC"],
            )
        return list(found)

    def _adopt(self, runs: list[Any]) -> Any:
        """The run to keep among those tagged with the owner's uid: the oldest active one.

        Deleted ones are the duplicates this adapter removed, or a run someone deleted by
        hand; in the latter case the owner still needs it, so it is restored.
        """
        active = [run for run in runs if run.info.lifecycle_stage == "active"]
        if active:
            return _oldest(active)
        chosen = _oldest(runs)
        with mapped("restore run"):
            self._client.restore_run(chosen.info.run_id)
            return self._client.get_run(chosen.info.run_id)

    def _complete(self, run: Any, params: Mapping[str, str], dataset: DatasetInput | None) -> None:
        """Log what the run still lacks: params missing by key, the dataset input if absent.

        Two reconciles completing the same run race inside MLflow's SQL store (it checks
        for an existing param, then inserts: the loser gets a UNIQUE-constraint error as
        BAD_REQUEST). A refused write is therefore checked once against a fresh read, and
        counts as done when the other writer already made it.
        """
        run_id = str(run.info.run_id)
        wanted = {key: value[:MAX_PARAM_VALUE_LENGTH] for key, value in params.items()}
        entity = dataset_entity(dataset) if dataset is not None else None
        for last_try in (False, True):
            missing = [
                Param(key, value) for key, value in wanted.items() if key not in run.data.params
            ]
            needs_dataset = entity is not None and not _has_dataset_input(run, entity)
            operation = "log params"
            try:
                if missing:
                    # MlflowClient splits batches at MLflow's 100-params-per-request limit.
                    self._client.log_batch(run_id, params=missing)
                operation = "log dataset input"
                if entity is not None and needs_dataset:
                    self._client.log_inputs(run_id, datasets=[entity])
                return
            except (MlflowException, requests.exceptions.RequestException, OSError) as error:
                failure = map_mlflow_error(error, operation)
                if last_try or isinstance(failure, UnavailableError):
                    raise failure from None
            with mapped("get run"):
                run = self._client.get_run(run_id)

    def terminate_run(self, run_id: str, status: TerminalStatus) -> None:
        """End the run with `status`; nothing to do when it already has it.

        The operator's view of the pods wins over what the training code reported (its
        `mlflow.end_run()` says FINISHED even when the pod is OOM-killed a moment later);
        an end time already set by the training code is kept.
        """
        with mapped("get run"):
            run = self._client.get_run(run_id)
        self._terminate(run, status)

    def finish_run(self, run_id: str, status: TerminalStatus) -> dict[str, float]:
        """The run's final metrics, read before it is ended with `status`: one read serves
        both, as the training has stopped writing by now."""
        with mapped("get run"):
            run = self._client.get_run(run_id)
        self._terminate(run, status)
        return _latest_metrics(run)

    def _terminate(self, run: Any, status: TerminalStatus) -> None:
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"not a terminal run status: {status}")
        info = run.info
        run_id = str(info.run_id)
        if info.status == status and info.end_time:
            return
        if info.lifecycle_stage == "deleted":
            # MLflow refuses updates to a deleted run (INVALID_PARAMETER_VALUE); someone
            # removed it on purpose and there is nothing left to close.
            return
        end_time = info.end_time if info.status in TERMINAL_STATUSES and info.end_time else None
        with mapped("terminate run"):
            self._client.set_terminated(run_id, status=status, end_time=end_time)

    def get_run(self, run_id: str) -> RunSnapshot:
        with mapped("get run"):
            run = self._client.get_run(run_id)
        return RunSnapshot(
            run_id=run.info.run_id,
            status=str(run.info.status),
            metrics=_latest_metrics(run),
            params=dict(run.data.params),
            tags=dict(run.data.tags),
            artifact_uri=str(run.info.artifact_uri),
        )

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return run_url_for(self.tracking_uri, experiment_id, run_id)

    # ---- registry (read only, for the champion gate) --------------------------------
    def champion(self, model_name: str, alias: str, metric: str) -> ChampionRecord | None:
        """The version `alias` points to and `metric` of the run behind it; None when there
        is no such registered model or alias (no champion yet)."""
        with mapped("get registered model"):
            try:
                model = self._client.get_registered_model(model_name)
            except MlflowException as error:
                if error.error_code in NOT_FOUND_CODES:
                    return None
                raise
        version = (model.aliases or {}).get(alias)
        if version is None:
            return None
        with mapped("get model version"):
            found = self._client.get_model_version(model_name, str(version))
        run_id = found.run_id or None
        if run_id is None:
            # Registered from a URI, not from a run: there are no metrics to compare.
            return ChampionRecord(str(version), None, str(found.source), run_found=False)
        with mapped("get champion run"):
            try:
                metrics = self._client.get_run(run_id).data.metrics
            except MlflowException as error:
                if error.error_code in NOT_FOUND_CODES:
                    return ChampionRecord(str(version), run_id, str(found.source), False)
                raise
        value = metrics.get(metric)
        return ChampionRecord(
            str(version),
            run_id,
            str(found.source),
            run_found=True,
            value=None if value is None else float(value),
        )


def _latest_metrics(run: Any) -> dict[str, float]:
    # `data.metrics` holds each metric's latest value (highest step, then newest).
    return {key: float(value) for key, value in run.data.metrics.items()}


def _has_dataset_input(run: Any, entity: MlflowDatasetInput) -> bool:
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return any(
        (item.dataset.name, item.dataset.digest) == (entity.dataset.name, entity.dataset.digest)
        for item in inputs
    )


def _oldest(runs: list[Any]) -> Any:
    # start_time ties (same millisecond) are broken by run id, so every caller agrees.
    return min(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=str(run.info.run_id),
        experiment_id=str(run.info.experiment_id),
        status=str(run.info.status),
        artifact_uri=str(run.info.artifact_uri),
        start_time_ms=int(run.info.start_time or 0),
    )


__all__ = [
    # Defined in mlflowclient; still imported from here by the ModelVersion reconciler.
    "SERVICE",
    "DatasetInput",
    "MlflowTracking",
    "RunRecord",
    "RunSnapshot",
    "TerminalStatus",
    "dataset_entity",
    "run_url_for",
]
