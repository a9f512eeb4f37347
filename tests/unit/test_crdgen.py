"""The CRDs in crds/ are exactly what the models generate, and are structural."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from mlcycle.api.crdgen import (
    HEADER,
    SchemaError,
    crd_manifest,
    generate_crds,
    render_yaml,
    structural_schema,
    write_crds,
)
from mlcycle.api.v1alpha1 import KINDS, ApiModel, CustomResource, TrainingJob
from mlcycle.api.v1alpha1.validation import KubeObject, Quantity

pytestmark = pytest.mark.unit

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


def _nodes(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from _nodes(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _nodes(schema["additionalProperties"], f"{path}{{*}}")


def _schema(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    schema: Mapping[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


ALL_CRDS = sorted(generate_crds().items())


def test_crds_directory_matches_the_models() -> None:
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in CRDS_DIR.glob("*.yaml")}
    generated = {name: render_yaml(crd) for name, crd in generate_crds().items()}
    stale = sorted(
        name
        for name in generated.keys() | on_disk.keys()
        if on_disk.get(name) != generated.get(name)
    )
    assert not stale, f"crds/ is out of date ({', '.join(stale)}): run `make crds`"


def test_every_file_says_it_is_generated() -> None:
    for path in CRDS_DIR.glob("*.yaml"):
        assert path.read_text(encoding="utf-8").startswith(HEADER), path.name


def test_rendering_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    first = [path.read_text() for path in write_crds(tmp_path / "a")]
    second = [path.read_text() for path in write_crds(tmp_path / "b")]
    assert first == second
    for name, crd in generate_crds().items():
        assert yaml.safe_load(render_yaml(crd)) == crd, name


@pytest.mark.parametrize(("file_name", "crd"), ALL_CRDS, ids=[name for name, _ in ALL_CRDS])
def test_every_schema_node_is_structural(file_name: str, crd: Mapping[str, Any]) -> None:
    for path, node in _nodes(_schema(crd)):
        where = f"{file_name}: {path or '<root>'}"
        for keyword in ("$ref", "$defs", "title", "oneOf", "allOf", "not", "nullable"):
            assert keyword not in node, f"{where}: {keyword}"
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, where
            assert node.get("anyOf", []) in ([], [{"type": "integer"}, {"type": "string"}]), where
        else:
            assert "anyOf" not in node, where
            assert node.get("type") in (
                "object",
                "array",
                "string",
                "integer",
                "number",
                "boolean",
            ), where
        if node.get("type") == "array":
            assert "items" in node, where
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), where
        assert not ("properties" in node and "additionalProperties" in node), where
        assert node.get("uniqueItems") is not True, where  # forbidden in v1 CRDs


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_status_is_fully_described_never_preserved(kind: type[CustomResource]) -> None:
    status = _schema(crd_manifest(kind))["properties"]["status"]
    assert status["type"] == "object"
    for path, node in _nodes(status):
        assert not node.get("x-kubernetes-preserve-unknown-fields"), f"status{path}"


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_preserved_fields_are_only_embedded_kubernetes_types(kind: type[CustomResource]) -> None:
    preserved = {
        path
        for path, node in _nodes(_schema(crd_manifest(kind)))
        if node.get("x-kubernetes-preserve-unknown-fields")
    }
    allowed_leaves = ("affinity", "securityContext", "containerSecurityContext", "volumes[*]")
    assert all(path.endswith(allowed_leaves) for path in preserved), preserved


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_crd_names_columns_and_subresources(kind: type[CustomResource]) -> None:
    crd = crd_manifest(kind)
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{kind.plural()}.mlcycle.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind.kind_name()
    assert spec["names"]["categories"] == ["mlcycle"]
    assert spec["names"]["shortNames"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert "Phase" in columns
    assert columns[-1] == "Age"
    assert _schema(crd)["properties"]["metadata"] == {"type": "object"}


def test_short_names_do_not_clash_with_kserve() -> None:
    short_names = {kind.kind_name(): kind.crd_names.short_names for kind in KINDS}
    assert short_names == {
        "TrainingJob": ("tj",),
        "ModelVersion": ("mv",),
        "InferenceService": ("mlisvc",),
    }


def test_printer_columns_point_at_existing_fields() -> None:
    for kind in KINDS:
        schema = _schema(crd_manifest(kind))
        for column in kind.printer_columns:
            node: Mapping[str, Any] = schema
            for part in column.json_path.strip(".").split("."):
                if part in ("metadata",):
                    break
                node = node["properties"][part]
            else:
                expected = "integer" if column.type == "integer" else node["type"]
                assert node["type"] == expected, column


@pytest.mark.parametrize(("file_name", "crd"), ALL_CRDS, ids=[name for name, _ in ALL_CRDS])
def test_every_cel_rule_has_a_message_and_bounded_iteration(
    file_name: str, crd: Mapping[str, Any]
) -> None:
    for path, node in _nodes(_schema(crd)):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["rule"].strip(), f"{file_name}: {path}"
            assert rule["message"].strip(), f"{file_name}: {path}: {rule['rule']}"
            iterates = any(
                f".{macro}(" in rule["rule"] for macro in ("all", "exists", "map", "filter")
            )
            if iterates and node["type"] == "array":
                assert "maxItems" in node, f"{file_name}: {path} iterates without maxItems"
            if iterates and node["type"] == "object" and "additionalProperties" in node:
                assert "maxProperties" in node, (
                    f"{file_name}: {path} iterates without maxProperties"
                )


def test_trainingjob_spec_is_immutable_except_suspend() -> None:
    spec = _schema(crd_manifest(TrainingJob))["properties"]["spec"]
    (rule,) = [r for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    assert rule["message"].startswith("spec is immutable")
    for field in spec["properties"]:
        assert (f"self.{field} ==" in rule["rule"]) == (field != "suspend"), field


def test_kopf_peering_crds_match_kopf() -> None:
    crds = generate_crds()
    cluster = crds["clusterkopfpeerings.kopf.dev.yaml"]
    namespaced = crds["kopfpeerings.kopf.dev.yaml"]
    assert (cluster["spec"]["scope"], namespaced["spec"]["scope"]) == ("Cluster", "Namespaced")
    for crd in (cluster, namespaced):
        assert crd["spec"]["group"] == "kopf.dev"
        assert crd["spec"]["versions"][0]["name"] == "v1"
        assert _schema(crd)["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True


# --- The translator refuses what it cannot express ---------------------------------------


class _Leaf(ApiModel):
    size: Quantity
    extra: KubeObject | None = None


class _Tree(ApiModel):
    """A tree."""

    child: _Tree | None = None


class _Union(ApiModel):
    either: int | _Leaf


class _KeyPattern(ApiModel):
    labels: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": "^a"}}
    )


def test_int_or_string_and_preserved_objects_translate() -> None:
    schema = structural_schema(_Leaf.model_json_schema(by_alias=True))
    assert schema["properties"]["size"]["x-kubernetes-int-or-string"] is True
    assert "type" not in schema["properties"]["size"]
    assert schema["properties"]["extra"] == {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert schema["required"] == ["size"]


@pytest.mark.parametrize(
    ("model", "complaint"),
    [(_Tree, "recursive"), (_Union, "union"), (_KeyPattern, "propertyNames")],
)
def test_untranslatable_schemas_are_refused_with_their_path(
    model: type[ApiModel], complaint: str
) -> None:
    with pytest.raises(SchemaError, match=complaint):
        structural_schema(model.model_json_schema(by_alias=True))
