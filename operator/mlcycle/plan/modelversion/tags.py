"""The tags a ModelVersion keeps on its registry version: the declared ones and where the
version is declared, which of them to set or delete, and the mark of an archived version."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from mlcycle.api.v1alpha1.modelversion import ModelVersion
from mlcycle.plan.approval import APPROVAL_REQUIRED_TAG, requires_approval

ARCHIVED_TAG: Final = "mlcycle.dev/archived"
"""Set on a version its ModelVersion left behind, deleted with `deletionPolicy: Archive`."""
NAMESPACE_TAG: Final = "mlcycle.dev/namespace"
NAME_TAG: Final = "mlcycle.dev/name"
DECLARED_TAGS_TAG: Final = "mlcycle.dev/declared-tags"
"""The keys of `spec.tags` last written, so a key dropped from the spec is deleted in MLflow
while tags set by anyone else are left alone."""


def desired_version_tags(mv: ModelVersion) -> dict[str, str]:
    """Declared tags plus where the version is declared; the uid tag is the adapter's."""
    return {
        **mv.spec.tags,
        NAMESPACE_TAG: str(mv.metadata.namespace),
        NAME_TAG: str(mv.metadata.name),
        DECLARED_TAGS_TAG: json.dumps(sorted(mv.spec.tags)),
    }


def registration_tags(mv: ModelVersion) -> dict[str, str]:
    """The tags a new version is created with: the desired ones, plus the approval
    requirement, which no later sync removes."""
    tags = desired_version_tags(mv)
    if requires_approval(mv):
        tags[APPROVAL_REQUIRED_TAG] = "true"
    return tags


def dropped_tags(mv: ModelVersion, actual: Mapping[str, str]) -> list[str]:
    """Tags this object declared before and no longer does, still on the version."""
    try:
        before = json.loads(actual.get(DECLARED_TAGS_TAG, "[]"))
    except ValueError:
        return []  # edited by hand into something else: nothing is known to be ours
    if not isinstance(before, list):
        return []
    return sorted(
        key for key in before if isinstance(key, str) and key in actual and key not in mv.spec.tags
    )


def tag_updates(desired: Mapping[str, str], actual: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in desired.items() if actual.get(key) != value}
