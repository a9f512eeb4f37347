"""A ModelVersion's aliases: the claims, alias moves and history tags that bring them to
the declared state in one pass, and the claims its finalizer gives up."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from mlcycle.api.v1alpha1.modelversion import AliasMove, ModelVersion
from mlcycle.plan import reasons
from mlcycle.plan.alias_ownership import (
    ALIAS_CLAIM_PREFIX,
    Claimant,
    ClaimVerdict,
    claim_key,
    claim_value,
    claimant,
    wanted_aliases,
)
from mlcycle.plan.conditions import EventIntent

ALIAS_HISTORY_PREFIX: Final = "mlcycle.dev/alias."


@dataclass(frozen=True)
class AliasPlan:
    """Registry writes that bring the aliases to the declared state, and their record."""

    claims: dict[str, str] = field(default_factory=dict)
    """Registered-model tags to set: claims taken."""
    releases: list[str] = field(default_factory=list)
    """Registered-model tags to delete: claims given up."""
    set_aliases: list[str] = field(default_factory=list)
    remove_aliases: list[str] = field(default_factory=list)
    version_tags: dict[str, str] = field(default_factory=dict)
    """The alias history on the MLflow version itself."""
    held: list[str] = field(default_factory=list)
    """Aliases pointing at this version once applied."""
    conflicts: dict[str, Claimant] = field(default_factory=dict)
    superseded: dict[str, Claimant] = field(default_factory=dict)
    """Wanted aliases that follow a newer registration (`aliasPolicy: Newest`)."""
    moves: list[AliasMove] = field(default_factory=list)
    events: list[EventIntent] = field(default_factory=list)


def _history_tag(move: AliasMove) -> tuple[str, str]:
    previous = f", previous version {move.previous_version}" if move.previous_version else ""
    when = move.time.isoformat().replace("+00:00", "Z")
    return f"{ALIAS_HISTORY_PREFIX}{move.alias}", f"{move.action} at {when}{previous}"


def plan_aliases(
    mv: ModelVersion,
    *,
    version: str,
    model_aliases: Mapping[str, str],
    model_tags: Mapping[str, str],
    verdicts: Mapping[str, ClaimVerdict],
    previously_held: Sequence[str],
    now: datetime.datetime,
) -> AliasPlan:
    """Claims, alias writes and their record for one pass.

    `verdicts` holds `claim_verdict` for each alias another object claims (a claim left
    out stands). An alias this object held before and finds elsewhere (or gone) was changed
    in MLflow directly: it is set back and reported as drift.
    """
    plan = AliasPlan()
    mine = claim_value(mv)
    wanted = wanted_aliases(mv)
    for alias in wanted:
        claim = model_tags.get(claim_key(alias))
        owner = claimant(claim) if claim else None
        if owner is not None and owner.uid != mv.metadata.uid:
            verdict = verdicts.get(alias, "Conflict")
            if verdict == "Superseded":
                plan.superseded[alias] = owner
                continue
            if verdict == "Conflict":
                plan.conflicts[alias] = owner
                continue
        if claim != mine:
            plan.claims[claim_key(alias)] = mine
        current = model_aliases.get(alias)
        plan.held.append(alias)
        if current == version:
            continue
        plan.set_aliases.append(alias)
        drift = alias in previously_held
        reason = (
            f"changed in MLflow to {f'version {current}' if current else 'nothing'}; set back"
            if drift
            else "declared"
        )
        move = AliasMove(
            alias=alias, action="Set", time=now, previous_version=current, reason=reason
        )
        plan.moves.append(move)
        if drift:
            plan.events.append(
                EventIntent(
                    "Warning",
                    reasons.DRIFT_CORRECTED,
                    f"alias {alias} was {reason}: version {version}",
                )
            )
        else:
            before = f" (was version {current})" if current else ""
            plan.events.append(
                EventIntent(
                    "Normal", reasons.ALIAS_MOVED, f"alias {alias} set to version {version}{before}"
                )
            )
    for key, value in model_tags.items():
        alias = key.removeprefix(ALIAS_CLAIM_PREFIX)
        if not key.startswith(ALIAS_CLAIM_PREFIX) or alias in wanted:
            continue
        owner = claimant(value)
        if owner is None or owner.uid != mv.metadata.uid:
            continue
        plan.releases.append(key)
        if model_aliases.get(alias) == version:
            plan.remove_aliases.append(alias)
            why = "approval withdrawn" if alias in mv.spec.aliases else "no longer declared"
            plan.moves.append(
                AliasMove(
                    alias=alias, action="Removed", time=now, previous_version=version, reason=why
                )
            )
            plan.events.append(
                EventIntent(
                    "Normal",
                    reasons.ALIAS_REMOVED,
                    f"alias {alias} removed from version {version} ({why})",
                )
            )
    for move in plan.moves:
        key, value = _history_tag(move)
        plan.version_tags[key] = value
    return plan


def release_all(mv: ModelVersion, model_tags: Mapping[str, str]) -> list[str]:
    """The claim tags `mv` holds, for its finalizer to give up."""
    return [
        key
        for key, value in model_tags.items()
        if key.startswith(ALIAS_CLAIM_PREFIX)
        and (owner := claimant(value)) is not None
        and owner.uid == mv.metadata.uid
    ]
