"""InferenceService decisions: which version to serve, the rollout state machine, the model
servers and the status; the traffic layer's children are `plan.traffic`'s.

Pure: what the registry, the Deployments and the router said arrives as an `Observed`, the
clock is an argument. One concern per module: `resolve` (the version to serve), `observe`
(what the children say), `decision` (a pass and the plan it writes), `rollout` (the state
machine), `steps` (a step and its analysis), `endings` (promotion, rollback, abort),
`analysis` and `analysis_prometheus` (the verdict on an interval), `registry_writeback`
(outcomes owed to MLflow), `servers` (model-server children and their replicas), `status`.
"""

from mlcycle.plan.inferenceservice.decision import RolloutPlan
from mlcycle.plan.inferenceservice.observe import (
    Observed,
    Track,
    ready_replicas,
    router_pod_addresses,
    router_ready,
    server_pod_addresses,
)
from mlcycle.plan.inferenceservice.resolve import (
    Blocked,
    Target,
    approval_gate,
    target_from_model_version,
)
from mlcycle.plan.inferenceservice.rollout import plan_rollout
from mlcycle.plan.inferenceservice.servers import server_children, stale_server_children
from mlcycle.plan.inferenceservice.status import status_plan
from mlcycle.plan.inferenceservice.steps import analysis_due, seconds_to_next_decision
from mlcycle.plan.manifest_digest import manifest_digest
from mlcycle.plan.serving_pods import DEFAULT_IMAGE

__all__ = [
    "DEFAULT_IMAGE",
    "Blocked",
    "Observed",
    "RolloutPlan",
    "Target",
    "Track",
    "analysis_due",
    "approval_gate",
    "manifest_digest",
    "plan_rollout",
    "ready_replicas",
    "router_pod_addresses",
    "router_ready",
    "seconds_to_next_decision",
    "server_children",
    "server_pod_addresses",
    "stale_server_children",
    "status_plan",
    "target_from_model_version",
]
