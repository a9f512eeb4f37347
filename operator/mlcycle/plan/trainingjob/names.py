"""The names and labels of a TrainingJob's children, and which gang attempt a Job is."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from mlcycle.api.v1alpha1.trainingjob import TrainingJob
from mlcycle.plan.ownership import MANAGED_BY_LABEL, name_label, short_hash
from mlcycle.plan.trainingjob.manifests import labels_of

CONTAINER_NAME: Final = "trainer"

TRAININGJOB_LABEL: Final = "mlcycle.dev/trainingjob"
TRAININGJOB_UID_LABEL: Final = "mlcycle.dev/trainingjob-uid"
ATTEMPT_LABEL: Final = "mlcycle.dev/attempt"
COMPLETION_INDEX_KEY: Final = "batch.kubernetes.io/job-completion-index"

# A Job's name becomes the `job-name` label of its pods (label values are at most 63
# characters), and for an Indexed Job `<name>-<index>` becomes each pod's hostname and the
# name the headless Service (a DNS-1035 label) must carry.
_NAME_LIMIT: Final = 63
_DNS_1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def job_name(tj: TrainingJob, attempt: int = 0) -> str:
    """`<name>` for the first attempt, `<name>-r<attempt>` for each gang restart.

    A name that is too long, or not a DNS-1035 label (dots, a leading digit), is shortened
    and made valid with a hash of the full name, so two TrainingJobs never share a Job.
    """
    name = str(tj.metadata.name)
    suffix = f"-r{attempt}" if attempt else ""
    limit = _NAME_LIMIT
    if tj.spec.workers > 1:
        limit -= len(f"-{tj.spec.workers - 1}")  # room for the pod hostname's index
    if _DNS_1035_LABEL.match(name) and len(name) + len(suffix) <= limit:
        return name + suffix
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not cleaned[:1].isalpha():
        cleaned = f"tj-{cleaned}"
    keep = limit - len(suffix) - len(short_hash(name)) - 1
    return f"{cleaned[:keep].rstrip('-')}-{short_hash(name)}{suffix}"


def attempt_of(name: str, tj: TrainingJob) -> int:
    """The gang attempt a Job name of this TrainingJob stands for (0 when it is no retry)."""
    match = re.search(r"-r([0-9]+)$", name)
    if match and job_name(tj, int(match.group(1))) == name:
        return int(match.group(1))
    return 0


def attempt_of_job(job: Mapping[str, Any]) -> int:
    label = labels_of(job).get(ATTEMPT_LABEL, "0")
    return int(label) if label.isdigit() else 0


def child_labels(tj: TrainingJob, attempt: int) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: "mlcycle",
        TRAININGJOB_LABEL: name_label(str(tj.metadata.name)),
        TRAININGJOB_UID_LABEL: str(tj.metadata.uid),
        ATTEMPT_LABEL: str(attempt),
    }
