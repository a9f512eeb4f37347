"""The Helm chart installs exactly the CRDs generated from the API models."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcycle.api.crdgen import generate_crds, render_yaml

pytestmark = pytest.mark.unit

CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "mlcycle" / "crds"


def test_chart_crds_match_the_generated_ones() -> None:
    expected = {name: render_yaml(crd) for name, crd in generate_crds().items()}
    shipped = {path.name: path.read_text() for path in CHART_CRDS.glob("*.yaml")}
    assert shipped == expected, "charts/mlcycle/crds is stale: run `make crds`"
