"""A step of the rollout: it starts at its strategy's weight once the candidate is ready,
and when its interval is over the counters since it started are analysed (`analysis`):
Passed moves on, Held restarts the interval, Failed counts a failed check."""

from __future__ import annotations

import datetime
from typing import Literal

from mlcycle.api.v1alpha1.inferenceservice import (
    AnalysisResult,
    InferenceService,
    InferenceServiceStatus,
    TrackStatus,
)
from mlcycle.plan import reasons
from mlcycle.plan.inferenceservice.analysis import analyse, duration_seconds, interval_figures
from mlcycle.plan.inferenceservice.decision import RolloutDecision
from mlcycle.plan.inferenceservice.endings import promote, roll_back
from mlcycle.plan.traffic import traffic_mode
from mlcycle.plan.traffic.split import mirror_percent, strategy_weight


def step_progress(decision: RolloutDecision, canary: TrackStatus) -> tuple[str, str]:
    """(reason, message) of the Progressing condition while the step runs."""
    strategy = decision.isvc.spec.rollout.strategy
    step = canary.step or 0
    if strategy == "Shadow":
        what = f"mirroring {mirror_percent(decision.isvc, canary)}% to"
    else:
        what = f"{canary.weight}% of traffic on"
    return (
        reasons.STEP_IN_PROGRESS,
        f"step {step + 1}/{len(decision.isvc.spec.rollout.steps)}: {what} version"
        f" {canary.version}, {canary.failed_checks or 0} failed checks",
    )


def start_step(decision: RolloutDecision, canary: TrackStatus, step: int) -> None:
    """`step` starts now: its weight applies, and its interval and baseline counters begin."""
    weight = strategy_weight(decision.isvc, step)
    updated = canary.model_copy(
        update={
            "step": step,
            "weight": weight,
            "step_started_at": decision.now,
            "baseline": decision.observed.canary_sample,
        }
    )
    decision.plan.canary = updated
    decision.plan.progress = step_progress(decision, updated)
    strategy = decision.isvc.spec.rollout.strategy
    if strategy == "Shadow":
        detail = f"mirroring {mirror_percent(decision.isvc, updated)}% of requests"
    elif strategy == "ABTest":
        ab = decision.isvc.spec.rollout.ab_test
        header = ab.header_name if ab else "?"
        detail = f"header {header} pinned, {weight}% of the rest"
    else:
        detail = f"weight {weight}%"
    decision.event(
        False,
        reasons.STEP_STARTED,
        f"step {step + 1}/{len(decision.isvc.spec.rollout.steps)} for version"
        f" {canary.version}: {detail}",
    )


def analyse_interval(decision: RolloutDecision, canary: TrackStatus) -> None:
    """The step's interval is over: its counters decide (Passed, Held or Failed)."""
    spec = decision.isvc.spec
    sample = decision.observed.canary_sample
    # Only a mode that counts requests itself (the router) tells mirrored requests apart;
    # elsewhere the candidate's own server counts them, and they are judged as live ones,
    # latency included.
    shadow = spec.rollout.strategy == "Shadow" and traffic_mode(decision.isvc).counts_requests
    mode: Literal["live", "shadow"] = "shadow" if shadow else "live"
    if sample is None:
        result = AnalysisResult(
            time=decision.now,
            outcome="Held",
            message="the candidate's metrics could not be read: step held",
        )
    else:
        figures = interval_figures(canary.baseline, sample)
        result = analyse(
            spec.analysis, figures, mode=mode, queries=decision.observed.queries, now=decision.now
        )
    decision.plan.analysis = result
    restarted = canary.model_copy(
        update={"last_analysis": result, "step_started_at": decision.now, "baseline": sample}
    )
    decision.plan.canary = restarted
    step = canary.step or 0
    if result.outcome == "Held":
        decision.event(False, reasons.ANALYSIS_HELD, result.message or "held")
        decision.plan.progress = step_progress(decision, restarted)
        return
    if result.outcome == "Failed":
        failed = (canary.failed_checks or 0) + 1
        restarted = restarted.model_copy(update={"failed_checks": failed})
        decision.plan.canary = restarted
        threshold = spec.analysis.failure_threshold
        decision.event(
            True,
            reasons.ANALYSIS_FAILED,
            f"version {canary.version} step {step + 1}: {result.message}"
            f" ({failed}/{threshold} failed checks)",
        )
        if failed >= threshold:
            roll_back(decision, "RolledBack", result.message or "analysis failed")
        else:
            decision.plan.progress = step_progress(decision, restarted)
        return
    decision.event(
        False,
        reasons.ANALYSIS_PASSED,
        f"version {canary.version} step {step + 1}: {_figures(result)}",
    )
    if spec.rollout.strategy == "ABTest":
        decision.plan.progress = (
            reasons.AWAITING_PROMOTION,
            f"A/B test of version {canary.version} running: promote with mlcycle.dev/promote",
        )
        return
    if step + 1 >= len(spec.rollout.steps):
        promote(decision, restarted)
        return
    start_step(decision, restarted, step + 1)


def _figures(result: AnalysisResult) -> str:
    parts = [f"{result.requests} requests"]
    if result.success_rate is not None:
        parts.append(f"success rate {result.success_rate:.3f}")
    if result.latency_p99_ms is not None:
        parts.append(f"p99 {result.latency_p99_ms:.1f} ms")
    if result.shadow_agreement is not None:
        parts.append(f"agreement {result.shadow_agreement:.3f}")
    return ", ".join(parts)


def analysis_due(isvc: InferenceService, now: datetime.datetime) -> bool:
    """Whether this pass may start a step or analyse, so the router must be read."""
    canary = (isvc.status or InferenceServiceStatus()).canary
    if canary is None:
        return False
    if canary.step_started_at is None:
        return True
    interval = datetime.timedelta(seconds=duration_seconds(isvc.spec.rollout.interval))
    return now - canary.step_started_at >= interval


def seconds_to_next_decision(isvc: InferenceService, now: datetime.datetime) -> float | None:
    canary = (isvc.status or InferenceServiceStatus()).canary
    if canary is None or canary.step_started_at is None:
        return None
    interval = duration_seconds(isvc.spec.rollout.interval)
    return max(0.0, interval - (now - canary.step_started_at).total_seconds())
