"""ModelVersion decisions: where the model comes from, which registry version is this
object's, which tags and aliases to write, how long to back off, and the status to write.

Pure: registry state arrives as plain records (anything with the attributes of
`RegistryVersion` / `SourceRunView`), the clock and the jitter are arguments. One concern
per module: `source`, `version` (the version kept and its registration state), `tags`,
`aliases` (this object's alias writes and history), `status`. Who owns an alias is
`mlcycle.plan.alias_ownership` and whether a version is approved `mlcycle.plan.approval`,
both shared with InferenceServices.

Phases and conditions
---------------------
`status.phase` is Pending (waiting for the source), Registering (the version exists in
MLflow and is not READY yet), Ready, or Failed (the source failed or does not exist, MLflow
refused the registration). Conditions (`reasons` holds every type and reason):

- `Accepted`: the spec parsed (`SpecValid`); an invalid one gets `InvalidSpec` instead.
- `SourceReady`: the source is resolved (`SourceResolved`) or what is awaited or missing
  (`WaitingForTrainingJob`, `WaitingForRun`, `TrainingJobNotFound`, `RunNotFound`,
  `TrainingJobFailed`, `RunFailed`, `VersionNotFound`).
- `Registered`: the MLflow version is READY (`VersionReady`), or `Registering`,
  `RegistrationFailed`, `MLflowUnavailable`, `MLflowRejected`.
- `Approved` (only with `approval.required`): `Approved` or `AwaitingApproval`.
- `AliasesSynced`: every declared alias points at this version (`AliasesSet`), or
  `AliasConflict` (another ModelVersion owns one) or `AwaitingApproval`.
- `SignatureRead`: the MLmodel's signature is in status (`SignatureFound`), the model has
  none (`NoSignature`), or it could not be read (`SignatureUnavailable`: the artifact store
  refused, or the operator has no writable /tmp); registration never waits for it.
- `Ready`: True once the phase is Ready.

"""

from mlcycle.plan.alias_ownership import claim_verdict, foreign_claims
from mlcycle.plan.approval import is_approved, requires_approval
from mlcycle.plan.modelversion.aliases import AliasPlan, plan_aliases, release_all
from mlcycle.plan.modelversion.source import (
    ResolvedSource,
    SourceBlocked,
    adopted_source,
    resolve_run,
    run_ref,
    uri_source,
)
from mlcycle.plan.modelversion.status import (
    Progress,
    backing_off,
    signature_settled,
    status_plan,
    unavailable_progress,
)
from mlcycle.plan.modelversion.tags import (
    ARCHIVED_TAG,
    desired_version_tags,
    dropped_tags,
    registration_tags,
    tag_updates,
)
from mlcycle.plan.modelversion.version import (
    REGISTERING_POLL_SECONDS,
    keep_oldest,
    registration_state,
)

__all__ = [
    "ARCHIVED_TAG",
    "REGISTERING_POLL_SECONDS",
    "AliasPlan",
    "Progress",
    "ResolvedSource",
    "SourceBlocked",
    "adopted_source",
    "backing_off",
    "claim_verdict",
    "desired_version_tags",
    "dropped_tags",
    "foreign_claims",
    "is_approved",
    "keep_oldest",
    "plan_aliases",
    "registration_state",
    "registration_tags",
    "release_all",
    "requires_approval",
    "resolve_run",
    "run_ref",
    "signature_settled",
    "status_plan",
    "tag_updates",
    "unavailable_progress",
    "uri_source",
]
