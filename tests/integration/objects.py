"""Objects on the test cluster through kubectl: applied, read back, and awaited (with a
deadline) until they reach a phase or a condition reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from mlcycle.api.v1alpha1 import CustomResource
from tests.builders import ResourceBuilder
from tests.harness import Kubectl, eventually

R = TypeVar("R", bound=CustomResource)


def apply(
    kubectl: Kubectl,
    namespace: str,
    manifest: Mapping[str, Any],
    *,
    server_side: bool = False,
    field_manager: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply` of one object in `namespace`; with `check=False` a refusal is
    returned, not raised."""
    options = ["--server-side"] if server_side else []
    if field_manager is not None:
        options.append(f"--field-manager={field_manager}")
    return kubectl(
        "apply", "-n", namespace, *options, "-f", "-",
        input_text=yaml.safe_dump(dict(manifest)), check=check,
    )  # fmt: skip


def applied(kubectl: Kubectl, namespace: str, built: ResourceBuilder[R]) -> R:
    """Applies a built object (server-side) and returns it as the apiserver stored it, with
    its uid: a real owner for children a test applies next."""
    manifest = built.manifest()
    apply(kubectl, namespace, manifest, server_side=True)
    stored = get(kubectl, namespace, built.kind.plural(), manifest["metadata"]["name"])
    return built.kind.from_body(stored)


def find(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    """The object, or None when kubectl cannot get it (not there, or not yet)."""
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    """The object; fails the test when kubectl cannot get it."""
    found: dict[str, Any] = json.loads(
        kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    )
    return found


def status_of(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    """The object's status (empty before the operator wrote one); fails the test when
    kubectl cannot get the object."""
    status: dict[str, Any] = get(kubectl, namespace, kind, name).get("status") or {}
    return status


def finalizers(kubectl: Kubectl, namespace: str, kind: str, name: str) -> list[str]:
    found: list[str] = get(kubectl, namespace, kind, name)["metadata"].get("finalizers") or []
    return found


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    """The condition of type `type_` in a status, or {} when there is none."""
    found: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c["type"] == type_), {}
    )
    return found


def in_phase(
    kubectl: Kubectl, namespace: str, kind: str, name: str, *phases: str
) -> dict[str, Any] | None:
    """The status when the object is in one of `phases`; None while it is not (or is not
    there): a probe for `eventually`."""
    status: dict[str, Any] = (find(kubectl, namespace, kind, name) or {}).get("status") or {}
    return status if status.get("phase") in phases else None


def wait_for_phase(
    kubectl: Kubectl, namespace: str, kind: str, name: str, *phases: str, timeout: float
) -> dict[str, Any]:
    """Waits until the object is in one of `phases`; returns its status."""
    return eventually(
        f"{kind} {name} in phase {' or '.join(phases)}",
        lambda: in_phase(kubectl, namespace, kind, name, *phases),
        timeout=timeout,
    )


def wait_for_condition(
    kubectl: Kubectl,
    namespace: str,
    kind: str,
    name: str,
    type_: str,
    reason: str,
    *,
    timeout: float,
) -> dict[str, Any]:
    """Waits until the object's condition `type_` has `reason`; returns its status."""

    def reached() -> dict[str, Any] | None:
        status = status_of(kubectl, namespace, kind, name)
        return status if condition(status, type_).get("reason") == reason else None

    return eventually(f"{kind} {name} condition {type_} reason {reason}", reached, timeout=timeout)
