"""The one redaction of URLs and of text that may quote them, for every place mlcycle shows
one: status, Events, logs, metrics and error bodies, of the operator and the data plane.

Libraries echo the URL they called, userinfo and presigned query included (MLflow's "API
request to http://user:password@host/... failed", botocore's presigned URLs). Pure, so
every layer, the data plane included, uses this one function rather than its own.
"""

from __future__ import annotations

import re
import urllib.parse

# Conditions and Events are read by people; a stack of nested library messages is not.
MAX_MESSAGE_LENGTH = 400

# A URL inside free text: a scheme, then anything up to whitespace or a closing quote.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
# `Authorization: Bearer …` or `Basic …` echoed by a library that prints request headers.
_AUTHORIZATION = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# The end of a URL's authority: its userinfo is whatever comes before the last `@` in it.
_AUTHORITY_END = re.compile(r"[/?#]")


def redact_url(url: str) -> str:
    """`url` without its userinfo (`user:password@`) and with its query replaced by `…`:
    query strings carry presigned signatures and tokens (`X-Amz-Signature=…`, `token=…`).
    The fragment stays (the MLflow UI routes by it)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    host = authority.rpartition("@")[2]
    path, hash_mark, fragment = tail.partition("#")
    path, question_mark, _query = path.partition("?")
    query = "?…" if question_mark else ""
    return f"{scheme}://{host}{path}{query}{hash_mark}{fragment}"


def without_userinfo(url: str) -> str:
    """`url` with its `user:password@` removed and everything else kept: the address a pod
    is given, its credentials arriving separately from a Secret."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def userinfo(url: str) -> tuple[str, str] | None:
    """The `(username, password)` a URL carries, decoded; None when it carries none."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return None
    return urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")


def redact_text(text: str, max_length: int | None = MAX_MESSAGE_LENGTH) -> str:
    """`text` with every URL in it passed through `redact_url` and authorization header
    values removed, capped to `max_length` characters (None: no cap, for logs)."""
    cleaned = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    cleaned = _AUTHORIZATION.sub(lambda match: f"{match.group(1)} …", cleaned)
    if max_length is not None and len(cleaned) > max_length:
        return cleaned[: max_length - 1] + "…"
    return cleaned
