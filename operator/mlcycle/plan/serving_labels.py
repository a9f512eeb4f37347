"""Labels on an InferenceService's children, and the one selector every traffic mode shares.

Both tracks' model-server pods (stable and candidate) carry `model_server_selector(isvc)`;
each track's Deployment adds `TRACK_LABEL` to tell its own pods apart. In replicas mode the
shared Service selects on `model_server_selector` alone, so both tracks answer it and the
split is the ratio of their ready pods. Router pods must not carry the component value, or
the shared Service would send requests to the router.
"""

from __future__ import annotations

from typing import Final

from mlcycle.api.v1alpha1.inferenceservice import InferenceService
from mlcycle.plan.ownership import MANAGED_BY_LABEL, name_label

INFERENCESERVICE_LABEL: Final = "mlcycle.dev/inferenceservice"
INFERENCESERVICE_UID_LABEL: Final = "mlcycle.dev/inferenceservice-uid"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MODEL_SERVER_COMPONENT: Final = "model-server"
TRACK_LABEL: Final = "mlcycle.dev/track"
"""`stable` or `canary`: which Deployment a model-server pod belongs to."""


def child_labels(isvc: InferenceService) -> dict[str, str]:
    """Labels every child of `isvc` carries (Services, routes, Deployments)."""
    return {
        MANAGED_BY_LABEL: "mlcycle",
        INFERENCESERVICE_LABEL: name_label(str(isvc.metadata.name)),
        INFERENCESERVICE_UID_LABEL: str(isvc.metadata.uid),
    }


def model_server_selector(isvc: InferenceService) -> dict[str, str]:
    """The labels both tracks' model-server pods carry, whatever their version."""
    return {
        INFERENCESERVICE_UID_LABEL: str(isvc.metadata.uid),
        COMPONENT_LABEL: MODEL_SERVER_COMPONENT,
    }
