"""The one redaction of URLs and of text quoting them (status, Events, logs, error bodies)."""

from __future__ import annotations

import pytest

from mlcycle.api.redaction import redact_text, redact_url, userinfo, without_userinfo

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://mlflow:5000", "http://mlflow:5000"),
        ("http://op:pw-1@mlflow:5000", "http://mlflow:5000"),
        ("https://op:pw-1@mlflow.example/prefix/", "https://mlflow.example/prefix/"),
        ("http://op:p%40ss@[::1]:5000/x", "http://[::1]:5000/x"),
        ("http://op:p@ss@host/x", "http://host/x"),  # an unencoded `@` in the password
        ("http://token@host", "http://host"),
        (
            "https://h/o?X-Amz-Signature=abc&X-Amz-Credential=AKIA#frag",
            "https://h/o?…#frag",
        ),
        (
            "http://u:p@mlflow:5000/#/experiments/1/runs/abc",
            "http://mlflow:5000/#/experiments/1/runs/abc",
        ),
        ("s3://key:secret@bucket/path/model", "s3://bucket/path/model"),
        ("models:/iris/3", "models:/iris/3"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_drops_userinfo_and_query_and_keeps_the_rest(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://u:p@h.example/x", "see https://h.example/x"),
        ("s3://key:secret@bucket/k and http://a@b/c", "s3://bucket/k and http://b/c"),
        ("GET https://h/o?X-Amz-Signature=abc&x=1 failed", "GET https://h/o?… failed"),
        ("no url here: a@b", "no url here: a@b"),
        (
            "API request to http://op:pw-9@127.0.0.1:5000/api/2.0/mlflow/runs/get failed",
            "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/get failed",
        ),
        ("model 'http://u:p@h/m' failed", "model 'http://h/m' failed"),
        ("Authorization: Bearer tok-0123456789abcdef", "Authorization: Bearer …"),
        (
            "headers {'Authorization': 'Basic dXNlcjpwYXNzd29yZA=='}",
            "headers {'Authorization': 'Basic …'}",
        ),
    ],
)
def test_redact_text_redacts_every_url_and_authorization_value(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_text_caps_long_messages_unless_told_not_to() -> None:
    assert len(redact_text("x" * 5000)) == 400
    assert len(redact_text("x" * 5000, max_length=None)) == 5000


def test_userinfo_is_split_from_the_address_pods_are_given() -> None:
    uri = "https://op:p%40ss@mlflow.example:5000/base?x=1"
    assert userinfo(uri) == ("op", "p@ss")
    assert without_userinfo(uri) == "https://mlflow.example:5000/base?x=1"
    assert userinfo("http://mlflow:5000") is None
    assert without_userinfo("http://mlflow:5000") == "http://mlflow:5000"
