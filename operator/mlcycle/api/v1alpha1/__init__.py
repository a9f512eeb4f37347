"""mlcycle.dev/v1alpha1: the three kinds and the types they share."""

from mlcycle.api.v1alpha1.common import (
    API_VERSION,
    CATEGORY,
    GROUP,
    VERSION,
    ApiModel,
    CelRule,
    Condition,
    CustomResource,
    ObjectMeta,
    PrinterColumn,
    StatusBase,
)
from mlcycle.api.v1alpha1.inferenceservice import (
    InferenceService,
    InferenceServiceSpec,
    InferenceServiceStatus,
)
from mlcycle.api.v1alpha1.modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus
from mlcycle.api.v1alpha1.trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus

KINDS: tuple[type[CustomResource], ...] = (TrainingJob, ModelVersion, InferenceService)

FINALIZER = f"{GROUP}/finalizer"
"""The operator's finalizer: only `mlcycle remove-finalizers` removes it without the
operator, once the operator is gone (see the README, "Uninstalling")."""

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "FINALIZER",
    "GROUP",
    "KINDS",
    "VERSION",
    "ApiModel",
    "CelRule",
    "Condition",
    "CustomResource",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "ModelVersion",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "ObjectMeta",
    "PrinterColumn",
    "StatusBase",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
