"""TrainingJob decisions: the child Job and Service, what the pods say, gang restarts,
registration gates, the MLflow run's final status and the status to write.

Pure: manifests are camelCase dicts for server-side apply, observed children are the dicts
the API server returned, and the clock is an argument. One concern per module: `names`
(children's names and labels), `run` (the MLflow run), `job` (the Job and its Service),
`pods` (what the pods say), `gang` (gang restarts), `observe` (the phase they add up to),
`gates` (registration gates), `registration` (the ModelVersion), `status`.

Phases and conditions
---------------------
`status.phase` is one of Pending, Running, Succeeded, Failed, Suspended. Conditions
(`reasons` holds every type and reason):

- `TrackingReady`: the MLflow run is bound (True, `RunBound`) or cannot be
  (False, `MLflowUnavailable` / `MLflowNotConfigured`).
- `Running`: True while the training pods run; False says why not (`Pending`,
  `ImagePullBackOff`, `Unschedulable`, `Queued`, `Completed`, `BackoffLimitExceeded`...).
- `Complete` / `Failed`: written once the training ended, as the batch/v1 Job does; the
  reason of `Failed` is the precise failure (`OOMKilled`, `DeadlineExceeded`, ...).
- `Suspended`: True while suspended (`Suspended` by the user, `Queued` waiting for Kueue);
  present as False (`Resumed`) once it was ever True, like the Job's own condition.
- `Admitted` (only with `queueName`): whether Kueue admitted the Job (unsuspended it).
- `ModelRegistered` (only with `register`, after success): True, or False with
  `GatesNotMet` and which metric missed by how much, or `ChampionMetricMissing` when the
  `compareTo` champion has nothing to compare with (unless `onMissing: pass`).

Every condition carries the TrainingJob's `observedGeneration`.
"""

from mlcycle.plan.trainingjob.gang import gang_restart
from mlcycle.plan.trainingjob.gates import GateResult, evaluate_gates
from mlcycle.plan.trainingjob.job import desired_headless_service, desired_job, job_suspended
from mlcycle.plan.trainingjob.names import TRAININGJOB_UID_LABEL, attempt_of, job_name
from mlcycle.plan.trainingjob.observe import observe_training
from mlcycle.plan.trainingjob.registration import desired_model_version
from mlcycle.plan.trainingjob.run import (
    RunBinding,
    experiment_name,
    mlflow_run_url,
    run_name,
    run_tags,
)
from mlcycle.plan.trainingjob.status import blocked_status, mlflow_run_status, status_patch

__all__ = [
    "TRAININGJOB_UID_LABEL",
    "GateResult",
    "RunBinding",
    "attempt_of",
    "blocked_status",
    "desired_headless_service",
    "desired_job",
    "desired_model_version",
    "evaluate_gates",
    "experiment_name",
    "gang_restart",
    "job_name",
    "job_suspended",
    "mlflow_run_status",
    "mlflow_run_url",
    "observe_training",
    "run_name",
    "run_tags",
    "status_patch",
]
