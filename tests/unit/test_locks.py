"""The image's lock and the development lock pin the same versions: what the tests ran is
what ships, minus the development tools."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)$", re.MULTILINE)


def _pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    return {package.lower(): version for package, version in _PIN.findall(text)}


def test_the_runtime_lock_is_the_development_lock_without_the_tools() -> None:
    development, runtime = _pins("requirements.lock"), _pins("requirements.runtime.lock")
    assert runtime, "requirements.runtime.lock pins nothing"
    differing = {
        package: (version, development.get(package))
        for package, version in runtime.items()
        if development.get(package) != version
    }
    assert not differing, f"run `make lock`: versions differ {differing}"
    for tool in ("pytest", "ruff", "mypy", "skl2onnx"):
        assert tool not in runtime
    for serving in ("mlflow", "scikit-learn", "xgboost-cpu", "lightgbm", "onnxruntime"):
        assert serving in runtime
