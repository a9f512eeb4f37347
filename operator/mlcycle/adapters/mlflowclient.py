"""The MLflow client both MLflow adapters share: one client per server with bounded calls,
the failures of MLflow, requests and sockets mapped to domain errors, and mlcycle's tags.

Errors leave through `map_mlflow_error` and `mapped` only, as `mlcycle.adapters.errors`
types whose messages never carry the tracking URI (MLflow's do, credentials included).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import urllib.parse
from collections.abc import Iterator

import requests
import urllib3.exceptions
from mlflow.exceptions import MlflowException

from mlcycle.adapters.errors import AdapterError, InvalidError, NotFoundError, UnavailableError

SERVICE = "mlflow"
UID_TAG = "mlcycle.dev/uid"
# Set by the reconcilers as owner tags; read back for lineage.
NAME_TAG = "mlcycle.dev/name"
KIND_TAG = "mlcycle.dev/kind"
DATASET_VERSION_TAG = "mlcycle.dev/dataset-version"

# Error codes (MlflowException.error_code) and what they mean to a reconciler.
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
_INVALID_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"})
_UNAVAILABLE_CODES = frozenset(
    {
        # MLflow's default code: server-side failures, but also a non-JSON answer from something
        # that is not an MLflow server (a misrouted proxy). Both pass once the server is fixed.
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        # A tracking URI whose path is not an MLflow API: operator configuration, not the object.
        "ENDPOINT_NOT_FOUND",
        # The operator's own credentials: an administrator fixes them, the object stays valid.
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "CUSTOMER_UNAUTHORIZED",
    }
)


def map_mlflow_error(error: BaseException, operation: str) -> AdapterError:
    """One place that turns MLflow, requests and socket failures into domain errors.

    Transport failures are recognised anywhere in the exception chain, because MLflow wraps
    them in a generic `MlflowException("API request to <url> failed …")` whose text carries
    the URL (credentials included, when the URI has them) and is therefore never reused.
    """
    transport = _transport_failure(error)
    if transport is not None:
        return UnavailableError(SERVICE, f"{operation}: {transport}")
    code = getattr(error, "error_code", None) if isinstance(error, MlflowException) else None
    detail = _server_message(error)
    if code in NOT_FOUND_CODES:
        return NotFoundError(f"{operation}: {detail}")
    if code in _INVALID_CODES:
        return InvalidError(f"{operation}: {detail}")
    if code in _UNAVAILABLE_CODES:
        return UnavailableError(SERVICE, f"{operation}: {code}")
    return AdapterError(f"{SERVICE} {operation} failed: {code or type(error).__name__}")


def _transport_failure(error: BaseException) -> str | None:
    """A short, URL-free description of a network failure in `error`'s chain, if there is one."""
    seen: set[int] = set()
    link: BaseException | None = error
    found: str | None = None
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        # The innermost recognisable cause is the most precise ("connection refused" rather
        # than "max retries exceeded"), so keep walking and let later links overwrite.
        description = _describe_transport(link)
        if description is not None:
            found = description
        link = link.__cause__ or link.__context__
    return found


def _describe_transport(error: BaseException) -> str | None:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "host name not resolved"
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        # Checked before timeouts: urllib3 derives it from ConnectTimeoutError.
        return "connection failed"
    if isinstance(error, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(error, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return "timed out"
    if isinstance(error, ssl.SSLError | requests.exceptions.SSLError):
        return "TLS handshake failed"
    if isinstance(error, urllib3.exceptions.ResponseError):
        # urllib3's own text, e.g. "too many 503 error responses": status codes only.
        return f"HTTP error responses ({error})"
    if isinstance(error, requests.exceptions.RetryError):
        return "HTTP error responses"
    if isinstance(
        error,
        requests.exceptions.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | urllib3.exceptions.ProtocolError
        | ConnectionError,
    ):
        return "connection failed"
    return None


def _server_message(error: BaseException) -> str:
    """What the server said about a refused request (no URL in it; redacted again anyway)."""
    if isinstance(error, MlflowException):
        return str(error.message)
    return type(error).__name__


@contextlib.contextmanager
def mapped(operation: str) -> Iterator[None]:
    try:
        yield
    except (MlflowException, requests.exceptions.RequestException, OSError) as error:
        # `from None`: kopf logs the cause chain, and MLflow's messages carry the full URL.
        raise map_mlflow_error(error, operation) from None


BasicAuth = tuple[str, str]


def client_uri(tracking_uri: str, basic_auth: BasicAuth | None) -> str:
    """The address the operator's own MLflow client calls: `tracking_uri` with the
    operator's credentials as userinfo, which requests sends as basic auth.

    MLflow reads credentials only from process-wide variables; userinfo keeps them to this
    client. Only the client sees this address: status, Events and pods get `tracking_uri`,
    and MLflow's error messages, which quote it, are redacted (`errors.AdapterError`).
    """
    if basic_auth is None:
        return tracking_uri
    username, password = (urllib.parse.quote(part, safe="") for part in basic_auth)
    parts = urllib.parse.urlsplit(tracking_uri)
    return parts._replace(netloc=f"{username}:{password}@{parts.netloc}").geturl()


def configure_mlflow_client(request_timeout_s: int, max_retries: int) -> None:
    """Bound every MLflow HTTP call of this process, and keep MLflow from printing URLs.

    MLflow 3.17 reads its timeout and retry policy from environment variables on every
    request (`mlflow.utils.rest_utils.http_request`), and neither `MlflowClient` nor its REST
    store accepts them per client, so they are set process-wide. Its defaults (120 s timeout,
    7 retries with exponential backoff) hold a reconcile for minutes while MLflow is down;
    the reconciler backs off with jitter instead.

    `set_terminated` writes "View run … at <tracking URI>" to stdout, userinfo included,
    after an extra GET: an operator logs structured lines and never a credential.
    """
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(request_timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    # The client otherwise fetches a telemetry config from the internet before its first
    # run call and reports usage; an operator in a cluster does neither unless asked to.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def quoted(value: str) -> str:
    # MLflow's search grammar has no escape for quotes inside a string literal, and a uid
    # never contains one; refuse rather than build a filter that matches something else.
    if "'" in value or "\\" in value:
        raise InvalidError(f"owner uid {value!r} cannot be used in an MLflow search filter")
    return value
