"""Ownership and labels of the children mlcycle objects create.

Every child carries a controller ownerReference to the mlcycle object that wants it, so the
garbage collector removes it with its owner, and labels saying who manages it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from mlcycle.api.v1alpha1.common import CustomResource

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
LABEL_VALUE_LIMIT: Final = 63


def controller_reference(owner: CustomResource) -> dict[str, Any]:
    """The ownerReference naming `owner` as the child's one controller."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def short_hash(text: str) -> str:
    """Eight hex digits of `text`'s SHA-256: what makes a shortened name unique again."""
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def name_label(name: str) -> str:
    """An object name as a label value.

    Object names run to 253 characters, label values to 63; a long name is cut and made
    unique again with a hash. Selectors use the uid label; this one is for people reading
    `kubectl get -l`.
    """
    if len(name) <= LABEL_VALUE_LIMIT:
        return name
    return f"{name[: LABEL_VALUE_LIMIT - 9].rstrip('.-')}-{short_hash(name)}"
