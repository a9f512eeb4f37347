"""The MLflow registry adapter where it touches the operator's own filesystem."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from mlcycle.adapters.errors import UnavailableError
from mlcycle.adapters.registry import MlflowRegistry

pytestmark = pytest.mark.unit


class _DownloadLocation:
    """The one MLflow call made before the scratch directory: the boundary faked here."""

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        return f"s3://artifacts/{name}/{version}"


def test_an_unwritable_tmp_is_an_adapter_error_not_an_oserror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator's root filesystem is read-only; without its /tmp volume the scratch
    # directory cannot be made.
    missing = tmp_path / "no-tmp-volume"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    registry = MlflowRegistry("http://127.0.0.1:9")
    monkeypatch.setattr(registry, "_client", _DownloadLocation())
    with pytest.raises(UnavailableError) as raised:
        registry.signature("iris", "1")
    assert str(missing) in raised.value.message
    assert raised.value.service == "scratch space"
