"""The vocabulary of condition types and reasons, each a `str` with a one-line doc, and the
entries every kind uses.

A condition type names one aspect of an object's state (`status.conditions[].type`); a
reason is the CamelCase word `kubectl describe` shows for a condition's last transition or
for an Event. Each kind's own entries sit in its module, next to its status; the README's
troubleshooting table is generated from their docs (`mlcycle docs`).
"""

from __future__ import annotations

from typing import Final, Self


class Documented(str):
    """A word of the API's vocabulary that says what it means: `doc` is one line for
    users, what it means and what to do about it."""

    doc: str

    def __new__(cls, value: str, doc: str) -> Self:
        word = super().__new__(cls, value)
        word.doc = doc
        return word

    def __reduce__(self) -> tuple[type[Self], tuple[str, str]]:
        # str's own reduction would rebuild the word without its doc (copy, deepcopy, pickle).
        return (type(self), (str(self), self.doc))


class ConditionType(Documented):
    """A condition type, such as `Ready`; `doc` says what its status reports."""


class Reason(Documented):
    """A condition reason or Event reason, such as `InvalidSpec`; `doc` says what it means
    and what the user should do."""


# --- Condition types every kind has -----------------------------------------------------------

ACCEPTED: Final = ConditionType(
    "Accepted",
    "Whether the operator accepts the spec (`SpecValid`); False with `InvalidSpec` until the"
    " spec is fixed.",
)
READY: Final = ConditionType(
    "Ready",
    "ModelVersion and InferenceService: whether the object does what its spec asks (the version"
    " is READY in MLflow: `VersionReady`; the stable version serves all traffic: `Serving`)."
    " When False the reason is the cause, or the phase (`Pending`, `Registering`,"
    " `Progressing`, `Paused`, `Promoting`, `RolledBack`, `Failed`): see the other conditions.",
)
CHILDREN_APPLIED: Final = ConditionType(
    "ChildrenApplied",
    "TrainingJob and InferenceService: whether the API server accepted every child the operator"
    " applies (Job; Deployments, Services, route); False names the refusal, retried with"
    " backoff.",
)

# --- Reasons every kind uses ------------------------------------------------------------------

SPEC_VALID: Final = Reason("SpecValid", "The spec is one the operator acts on; nothing to do.")
INVALID_SPEC: Final = Reason(
    "InvalidSpec",
    "The spec breaks a rule of the API (an object stored before a CRD upgrade, or one the"
    " apiserver could not check); the message names the field: fix the spec.",
)
APPLIED: Final = Reason("Applied", "The API server accepted every child; nothing to do.")
MLFLOW_UNAVAILABLE: Final = Reason(
    "MLflowUnavailable",
    "MLflow did not answer, or refused the operator's credentials: retried with backoff. Check"
    " the tracking server, `--mlflow-tracking-uri` and the operator's MLflow credentials.",
)
MLFLOW_NOT_CONFIGURED: Final = Reason(
    "MLflowNotConfigured",
    "The operator runs without an MLflow tracking URI: start it with `--mlflow-tracking-uri`"
    " (chart: `operator.mlflowTrackingUri`).",
)
MLFLOW_REJECTED: Final = Reason(
    "MLflowRejected",
    "MLflow refused the request (a deleted experiment, a name it does not accept): the message"
    " says why; fix it in MLflow or in the spec.",
)
VERSION_NOT_FOUND: Final = Reason(
    "VersionNotFound",
    "The registered model has no such version (ModelVersion `source.version`, InferenceService"
    " `model.version` or the one an alias names): correct the number.",
)
ALIAS_CONFLICT: Final = Reason(
    "AliasConflict",
    "Another object owns the alias (the message names it) and keeps it: remove the alias from"
    " one of them (see *Alias ownership*).",
)
