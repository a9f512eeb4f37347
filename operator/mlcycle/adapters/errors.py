"""The few domain errors adapters raise, whatever library sits behind them.

Reconcilers catch these, never `MlflowException`, `ApiException` or `botocore` errors: one
module maps them to kopf's retry semantics and to a condition reason. Their messages end up
in status conditions, Events and logs, so every message is passed through `redact_text` here,
once, rather than trusted to each call site.
"""

from __future__ import annotations

from mlcycle.api.redaction import redact_text


class AdapterError(Exception):
    """A call to an external system failed; the message is safe to show in status."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))

    @property
    def message(self) -> str:
        return str(self.args[0])


class UnavailableError(AdapterError):
    """The service could not be reached or did not answer properly: retry later, with backoff.

    Also raised for authentication failures of the operator itself: the object is fine, the
    operator's configuration is not, and retrying after an administrator fixes it succeeds.
    """

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service} unavailable: {message}")
        self.service = service


class NotFoundError(AdapterError):
    """The thing named does not exist (a run, an experiment, a model version)."""


class InvalidError(AdapterError):
    """The service refused the request as invalid: retrying the same request cannot help."""


class KindNotServedError(InvalidError):
    """The API server serves no such kind (its CRDs are not installed)."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(
            f"the API server does not serve {kind} ({api_version}): is its CRD installed?"
        )
        self.api_version = api_version
        self.kind = kind
