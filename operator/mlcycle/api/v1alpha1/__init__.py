"""mlcycle.dev/v1alpha1: the three kinds and the types they share."""

from mlcycle.api.v1alpha1.common import (
    API_VERSION,
    CATEGORY,
    GROUP,
    VERSION,
    ApiModel,
    Condition,
    CustomResource,
    ObjectMeta,
    PrinterColumn,
    StatusBase,
)
from mlcycle.api.v1alpha1.conditions import ConditionType, Reason
from mlcycle.api.v1alpha1.inferenceservice import (
    InferenceService,
    InferenceServiceSpec,
    InferenceServiceStatus,
)
from mlcycle.api.v1alpha1.modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus
from mlcycle.api.v1alpha1.trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus
from mlcycle.api.v1alpha1.validation import CelRule

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
    "ConditionType",
    "CustomResource",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "ModelVersion",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "ObjectMeta",
    "PrinterColumn",
    "Reason",
    "StatusBase",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
