"""The ModelVersion a TrainingJob creates to register its model once every gate held."""

from __future__ import annotations

from typing import Any

from mlcycle.api.v1alpha1.common import API_VERSION
from mlcycle.api.v1alpha1.trainingjob import TrainingJob
from mlcycle.plan.ownership import MANAGED_BY_LABEL, name_label, short_hash
from mlcycle.plan.trainingjob.names import TRAININGJOB_LABEL, TRAININGJOB_UID_LABEL
from mlcycle.plan.trainingjob.run import RunBinding


def desired_model_version(tj: TrainingJob, run: RunBinding) -> dict[str, Any]:
    """The ModelVersion registering the trained model once every gate held.

    Standalone, not owned by the TrainingJob: a TrainingJob deletes itself after
    `ttlSecondsAfterFinished`, and a registered model (perhaps serving traffic) must not go
    with it. Named after the run so a re-created TrainingJob of the same name registers a
    new version instead of colliding with the old one's immutable source.
    """
    registration = tj.spec.registration
    if registration is None:
        raise ValueError("the TrainingJob has no register block")
    base = f"{tj.metadata.name}-{run.run_id[:8]}"
    name = base if len(base) <= 253 else f"{base[:244]}-{short_hash(base)}"
    spec: dict[str, Any] = {
        "modelName": registration.model_name,
        "source": {"run": {"runId": run.run_id, "artifactPath": registration.artifact_path}},
        "tags": {
            TRAININGJOB_LABEL: str(tj.metadata.name),
            TRAININGJOB_UID_LABEL: str(tj.metadata.uid),
        },
    }
    if registration.aliases:
        # A later training that passes its gates takes the aliases over, as MLflow moves an
        # alias to the version last given it; a person's pin still outranks it.
        spec["aliases"] = list(registration.aliases)
        spec["aliasPolicy"] = "Newest"
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": name,
            "namespace": tj.metadata.namespace,
            "labels": {
                MANAGED_BY_LABEL: "mlcycle",
                TRAININGJOB_LABEL: name_label(str(tj.metadata.name)),
                TRAININGJOB_UID_LABEL: str(tj.metadata.uid),
            },
        },
        "spec": spec,
    }
