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
