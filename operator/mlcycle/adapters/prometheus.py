"""Prometheus instant queries for the rollout analysis' `prometheus` checks.

The standard library's HTTP client is enough for one POST per check per interval, and
keeps the operator free of another dependency. Blocking: reconcilers call it from a thread.

Errors follow the HTTP API's contract (https://prometheus.io/docs/prometheus/latest/querying/api/):
`bad_data` (the query does not parse) and `execution` (it parses but cannot be evaluated,
such as a many-to-many match) are the user's query → InvalidError with Prometheus' own
message; `timeout`, `canceled`, `internal`, `unavailable`, a non-Prometheus answer or no
answer at all are the server's state → UnavailableError, retried with backoff.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from mlcycle.adapters.errors import InvalidError, UnavailableError

SERVICE: Final = "Prometheus"
QUERY_PATH: Final = "/api/v1/query"
_QUERY_ERROR_TYPES: Final = frozenset({"bad_data", "execution"})


class PrometheusClient:
    def __init__(self, base_url: str, *, timeout_s: float = 5) -> None:
        """`base_url` is the server's root, with its path prefix if it has one
        (`http://prometheus.monitoring:9090`, `https://example.com/prometheus`)."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def query_scalar(self, query: str) -> float | None:
        """The value of an instant query that yields one number, or None without data.

        A scalar or a one-sample vector gives its value; an empty vector, or NaN (what a
        ratio or a quantile over no requests evaluates to), is no data. Several series are
        refused: which one is the candidate's would be a guess.
        """
        data = self._query(query)
        result_type, result = data.get("resultType"), data.get("result")
        if result_type == "scalar":
            return _sample_value(result)
        if result_type == "vector" and isinstance(result, list):
            if not result:
                return None
            if len(result) > 1:
                raise InvalidError(
                    f"query {_shorten(query)!r} returned {len(result)} series, expected one:"
                    " aggregate it (sum, max...) or select one series"
                )
            return _sample_value(result[0].get("value"))
        raise InvalidError(
            f"query {_shorten(query)!r} returned a {result_type}, expected a scalar or an"
            " instant vector"
        )

    def _query(self, query: str) -> dict[str, Any]:
        # POST, as the API allows: queries run to 4096 characters, more than URLs carry well.
        form = urllib.parse.urlencode({"query": query, "timeout": f"{self.timeout_s}s"})
        request = urllib.request.Request(
            self.base_url + QUERY_PATH,
            data=form.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = _json_or_none(response.read())
                status = response.status
        except urllib.error.HTTPError as error:
            # 400/422/503 carry the API's JSON error; anything else is not Prometheus'.
            body = _json_or_none(error.read())
            status = error.code
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise UnavailableError(SERVICE, f"{self.base_url}: {reason}") from error
        if not isinstance(body, dict) or "status" not in body:
            raise UnavailableError(
                SERVICE, f"{self.base_url}: HTTP {status}, not a Prometheus API answer"
            )
        if body["status"] != "success":
            error_type, message = body.get("errorType"), body.get("error", "")
            if error_type in _QUERY_ERROR_TYPES:
                raise InvalidError(f"Prometheus refused query {_shorten(query)!r}: {message}")
            raise UnavailableError(SERVICE, f"query failed ({error_type}): {message}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise UnavailableError(SERVICE, "answer without data")
        return data


def _sample_value(sample: Any) -> float | None:
    # A sample is [unix time, "value"]; the value is a string so that NaN and ±Inf survive JSON.
    if not isinstance(sample, list) or len(sample) != 2:
        raise UnavailableError(SERVICE, f"malformed sample {sample!r}")
    try:
        value = float(sample[1])
    except (TypeError, ValueError) as error:
        raise UnavailableError(SERVICE, f"malformed sample value {sample[1]!r}") from error
    return None if math.isnan(value) else value


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _shorten(query: str, limit: int = 120) -> str:
    return query if len(query) <= limit else query[: limit - 1] + "…"
