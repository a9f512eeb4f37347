"""The fixed vocabulary of condition types and Event reasons (CamelCase, as kubectl shows them)."""

from typing import Final

# Condition types
ACCEPTED: Final = "Accepted"
READY: Final = "Ready"

# Reasons
SPEC_VALID: Final = "SpecValid"
INVALID_SPEC: Final = "InvalidSpec"

# TrainingJob condition types. Complete/Failed/Suspended mirror the batch/v1 Job's own
# vocabulary so `kubectl describe` reads the same on the TrainingJob and its Job.
RUNNING: Final = "Running"
COMPLETE: Final = "Complete"
FAILED: Final = "Failed"
SUSPENDED: Final = "Suspended"
ADMITTED: Final = "Admitted"
TRACKING_READY: Final = "TrackingReady"
MODEL_REGISTERED: Final = "ModelRegistered"

# TrainingJob reasons
PENDING: Final = "Pending"
JOB_CREATED: Final = "JobCreated"
QUEUED: Final = "Queued"
RESUMED: Final = "Resumed"
COMPLETED: Final = "Completed"
GANG_RESTARTING: Final = "GangRestarting"
BACKOFF_LIMIT_EXCEEDED: Final = "BackoffLimitExceeded"
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
POD_FAILURE_POLICY: Final = "PodFailurePolicy"
OOM_KILLED: Final = "OOMKilled"
IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
ERR_IMAGE_PULL: Final = "ErrImagePull"
INVALID_IMAGE_NAME: Final = "InvalidImageName"
CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"
CREATE_CONTAINER_ERROR: Final = "CreateContainerError"
UNSCHEDULABLE: Final = "Unschedulable"
STARTUP_DEADLINE_EXCEEDED: Final = "StartupDeadlineExceeded"
ERROR: Final = "Error"
RUN_BOUND: Final = "RunBound"
MLFLOW_UNAVAILABLE: Final = "MLflowUnavailable"
MLFLOW_NOT_CONFIGURED: Final = "MLflowNotConfigured"
GATES_NOT_MET: Final = "GatesNotMet"

# ModelVersion condition types
SOURCE_READY: Final = "SourceReady"
REGISTERED: Final = "Registered"
APPROVED: Final = "Approved"
ALIASES_SYNCED: Final = "AliasesSynced"

# ModelVersion reasons
SOURCE_RESOLVED: Final = "SourceResolved"
WAITING_FOR_TRAINING_JOB: Final = "WaitingForTrainingJob"
TRAINING_JOB_NOT_FOUND: Final = "TrainingJobNotFound"
TRAINING_JOB_FAILED: Final = "TrainingJobFailed"
WAITING_FOR_RUN: Final = "WaitingForRun"
RUN_NOT_FOUND: Final = "RunNotFound"
RUN_FAILED: Final = "RunFailed"
VERSION_NOT_FOUND: Final = "VersionNotFound"
REGISTERING: Final = "Registering"
VERSION_READY: Final = "VersionReady"
REGISTRATION_FAILED: Final = "RegistrationFailed"
MLFLOW_REJECTED: Final = "MLflowRejected"
AWAITING_APPROVAL: Final = "AwaitingApproval"
ALIASES_SET: Final = "AliasesSet"
ALIAS_CONFLICT: Final = "AliasConflict"
ALIAS_MOVED: Final = "AliasMoved"
ALIAS_REMOVED: Final = "AliasRemoved"
DRIFT_CORRECTED: Final = "DriftCorrected"
DUPLICATE_VERSION_REMOVED: Final = "DuplicateVersionRemoved"
VERSION_CREATED: Final = "VersionCreated"
VERSION_ADOPTED: Final = "VersionAdopted"
