"""Fixtures of the integration tests: the operator running in-process for one test's
namespace, and the request loads a test starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.harness import RunningOperator, operator_in_thread
from tests.integration.serving import Load


@pytest.fixture
def operator_settings() -> dict[str, object]:
    """OperatorConfig fields the `operator` fixture overrides; a test module redefines this
    fixture to run the operator with other settings."""
    return {}


@pytest.fixture
def operator(namespace: str, operator_settings: dict[str, object]) -> Iterator[RunningOperator]:
    """The operator, watching the test's namespace only, stopped after the test."""
    with operator_in_thread([namespace], **operator_settings) as running:
        yield running


@pytest.fixture
def load_threads() -> Iterator[list[tuple[Load, threading.Thread]]]:
    """Where `start_load` records the loads it starts; each is stopped after the test."""
    started: list[tuple[Load, threading.Thread]] = []
    yield started
    for load, thread in started:
        load.stop.set()
        thread.join(timeout=15)
