"""Our own objects as the API server has them now, typed: read by one kind's reconciler
about another (a ModelVersion's TrainingJob, the claimant of an alias)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from mlcycle.adapters.cluster import ClusterClient
from mlcycle.api.v1alpha1 import API_VERSION, CustomResource, InferenceService, ModelVersion
from mlcycle.plan.alias_ownership import Claimant

Resource = TypeVar("Resource", bound=CustomResource)


def read_object(
    cluster: ClusterClient, kind: type[Resource], namespace: str, name: str
) -> Resource | None:
    """Blocking. None when there is no such object, or its spec is invalid (its own
    reconciler reports that; to the reader it is an object that says nothing)."""
    body = cluster.get(API_VERSION, kind.kind_name(), namespace, name)
    if body is None:
        return None
    try:
        return kind.from_body(body)
    except ValidationError:
        return None


def claimant_object(
    cluster: ClusterClient, owner: Claimant
) -> ModelVersion | InferenceService | None:
    """Blocking: the object behind an alias claim."""
    if owner.kind == "InferenceService":
        return read_object(cluster, InferenceService, owner.namespace, owner.name)
    return read_object(cluster, ModelVersion, owner.namespace, owner.name)
