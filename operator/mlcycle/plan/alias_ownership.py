"""Alias ownership: which one object may move each alias of a registered model.

An alias of a registered model is moved by exactly one object: the one whose claim, the
registered-model tag `mlcycle.dev/alias-owner.<alias>` = `<namespace>/<name>/<uid>` (a
ModelVersion) or `InferenceService:<namespace>/<name>/<uid>` (its `registry.promoteAlias`),
stands. One tag per alias, so a crash between any two writes never leaves two owners.
`claim_verdict` is the whole rule. A claim is taken when the alias is unclaimed, or its
claimant no longer exists, is being deleted, or no longer wants the alias (a ModelVersion
lost its approval or dropped it from `aliases`; an InferenceService promotes to another
alias). A live claim of a ModelVersion with `aliasPolicy: Newest` (what a TrainingJob's
gated registration declares) gives way to a newer such version, as MLflow moves an alias
to the version last given it, and to a pin (a `Pin` ModelVersion, an InferenceService's
promotion); an older `Newest` version finds itself `AliasSuperseded` and never takes the
alias back. Any other live claim stands: a second ModelVersion declaring the alias gets
`AliasesSynced=False` with `AliasConflict`, a second InferenceService an `AliasConflict`
Event at promotion, and either leaves the alias alone. Taking is one-way between any two
objects, so none flip-flops. The owner corrects any change made to the alias in MLflow
directly (drift) and announces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeGuard

from mlcycle.api.v1alpha1.inferenceservice import InferenceService
from mlcycle.api.v1alpha1.modelversion import ModelVersion
from mlcycle.plan.approval import is_approved

ALIAS_CLAIM_PREFIX: Final = "mlcycle.dev/alias-owner."


def wanted_aliases(mv: ModelVersion) -> list[str]:
    """The aliases this object should hold now: none until approved."""
    return list(mv.spec.aliases) if is_approved(mv) else []


def claim_key(alias: str) -> str:
    return f"{ALIAS_CLAIM_PREFIX}{alias}"


_CLAIMING_KINDS: Final = ("ModelVersion", "InferenceService")


def claim_value(owner: ModelVersion | InferenceService) -> str:
    # A ModelVersion's claim carries no kind: the form claims had before InferenceServices
    # could hold one, still valid in registries written then.
    base = f"{owner.metadata.namespace}/{owner.metadata.name}/{owner.metadata.uid}"
    return base if owner.kind == "ModelVersion" else f"{owner.kind}:{base}"


@dataclass(frozen=True)
class Claimant:
    namespace: str
    name: str
    uid: str
    kind: str = "ModelVersion"


def claimant(value: str) -> Claimant | None:
    kind, _, path = value.rpartition(":")
    parts = path.split("/")
    if (kind or "ModelVersion") not in _CLAIMING_KINDS or len(parts) != 3 or not all(parts):
        return None
    namespace, name, uid = parts
    return Claimant(namespace, name, uid, kind or "ModelVersion")


def foreign_claims(mv: ModelVersion, model_tags: Mapping[str, str]) -> dict[str, Claimant]:
    """Claims by other objects on the aliases `mv` wants."""
    found: dict[str, Claimant] = {}
    for alias in wanted_aliases(mv):
        value = model_tags.get(claim_key(alias))
        owner = claimant(value) if value else None
        if owner is not None and owner.uid != mv.metadata.uid:
            found[alias] = owner
    return found


def claim_is_live(
    alias: str, owner: Claimant, current: ModelVersion | InferenceService | None
) -> bool:
    """Whether the claimant still exists (same uid), is not being deleted, and still wants
    the alias (a ModelVersion declares it and is approved; an InferenceService promotes
    to it); otherwise its claim is stale and may be taken over."""
    if current is None or current.metadata.uid != owner.uid:
        return False
    if current.metadata.deletion_timestamp is not None:
        return False
    if isinstance(current, InferenceService):
        registry = current.spec.registry
        return registry is not None and registry.promote_alias == alias
    return alias in wanted_aliases(current)


ClaimVerdict = Literal["Take", "Conflict", "Superseded"]
"""What an object wanting an alias does about another object's claim on it: take it, leave
it and report a conflict, or leave it because a newer registration follows it."""


def claim_verdict(
    alias: str,
    holder: Claimant,
    holder_now: ModelVersion | InferenceService | None,
    contender: ModelVersion | InferenceService,
    contender_version: str | None = None,
) -> ClaimVerdict:
    """Whether `contender` (at registry version `contender_version` when a ModelVersion)
    may take `alias` from `holder`, whose object the API server has as `holder_now`.

    Taking is one-way: whenever the contender may take the alias, the holder may not take
    it back (a pin never yields to a `Newest` version, a version never to an older one).
    """
    if not claim_is_live(alias, holder, holder_now):
        return "Take"
    if not _follows_newest(holder_now):
        return "Conflict"
    if not _follows_newest(contender):
        return "Take"  # a person's pin or a promotion outranks an automatic registration
    held = _version_number(holder_now.status.version if holder_now.status else None)
    wanted = _version_number(contender_version)
    if held is None or wanted is None:
        # The holder's status write was lost after its claim: undecided until it lands.
        return "Conflict"
    if wanted > held:
        return "Take"
    return "Superseded" if wanted < held else "Conflict"


def _follows_newest(
    owner: ModelVersion | InferenceService | None,
) -> TypeGuard[ModelVersion]:
    return isinstance(owner, ModelVersion) and owner.spec.alias_policy == "Newest"


def _version_number(version: str | None) -> int | None:
    return int(version) if version is not None and version.isdigit() else None
