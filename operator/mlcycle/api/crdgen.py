"""pydantic models → structural OpenAPI v3 schemas → CustomResourceDefinitions in `crds/`.

apiextensions.k8s.io/v1 accepts only *structural* schemas: every node has a type (or is an
int-or-string or preserves unknown fields), no `$ref`, and unions only in the one
int-or-string shape. pydantic's JSON Schema is close; this module closes the gap and
refuses, with the offending path, anything it cannot translate faithfully, so a new field
never reaches the cluster with a silently weakened schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from mlcycle.api.v1alpha1 import GROUP, KINDS, VERSION, CustomResource

HEADER: Final = (
    "# Generated from operator/mlcycle/api by mlcycle.api.crdgen: do not edit by hand.\n"
    "# Regenerate with `make crds`.\n"
)
PART_OF_LABEL: Final = {"app.kubernetes.io/part-of": "mlcycle"}

# Keywords a structural schema may carry as they are.
_KEPT_KEYWORDS: Final = frozenset(
    {
        "type",
        "description",
        "default",
        "enum",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    }
)
_INT_OR_STRING: Final = [{"type": "integer"}, {"type": "string"}]


class SchemaError(ValueError):
    """A model uses a JSON Schema construct that has no structural equivalent."""


def structural_schema(json_schema: Mapping[str, Any]) -> dict[str, Any]:
    """Translate pydantic's JSON Schema (with `$defs`) into one structural schema tree."""
    return _translate(json_schema, json_schema.get("$defs", {}), "", ())


def _merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """A referenced or unwrapped schema with the keys written beside the reference.

    The field's own keys (description, default) win over the type's; CEL rules of the type
    and of the field both apply.
    """
    merged = {**base, **overlay}
    rules = [
        *base.get("x-kubernetes-validations", []),
        *overlay.get("x-kubernetes-validations", []),
    ]
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _translate(
    node: Mapping[str, Any], defs: Mapping[str, Any], path: str, resolving: tuple[str, ...]
) -> dict[str, Any]:
    where = path or "<root>"
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name in resolving:
            raise SchemaError(f"{where}: {name} is recursive; CRD schemas cannot be")
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return _translate(_merge(defs[name], siblings), defs, path, (*resolving, name))

    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        members = [member for member in node["anyOf"] if member.get("type") != "null"]
        if len(members) != 1:
            raise SchemaError(
                f"{where}: a union of {len(members)} types is not structural; model a"
                " 'one of' as optional fields with a CelRule such as exactly_one_of()"
            )
        # Optional[X] is X: an absent field and a null one mean the same to mlcycle, and the
        # apiserver drops nulls of non-nullable fields before validation.
        siblings = {key: value for key, value in node.items() if key != "anyOf"}
        return _translate(_merge(members[0], siblings), defs, path, resolving)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "default" and value is None:
            continue
        if key == "additionalProperties" and value is False:
            continue  # extra="forbid": the apiserver prunes unknown fields anyway
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020-12 gives the bound; OpenAPI v3.0 a flag beside min/max.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {
                name: _translate(child, defs, f"{path}.{name}", resolving)
                for name, child in value.items()
            }
        elif key == "items":
            out[key] = _translate(value, defs, f"{path}[*]", resolving)
        elif key == "additionalProperties" and isinstance(value, Mapping):
            out[key] = _translate(value, defs, f"{path}{{*}}", resolving)
        elif key in _KEPT_KEYWORDS or (key == "anyOf" and value == _INT_OR_STRING):
            out[key] = value
        else:
            raise SchemaError(f"{where}: JSON Schema keyword {key!r} has no structural form")

    if not ("type" in out or "x-kubernetes-int-or-string" in out):
        raise SchemaError(f"{where}: no type; use a typed field or KubeObject")
    if "properties" in out and "additionalProperties" in out:
        raise SchemaError(f"{where}: an object is either a struct or a map, not both")
    for rule in out.get("x-kubernetes-validations", []):
        if not rule.get("message"):
            raise SchemaError(f"{where}: CEL rule {rule['rule']!r} has no message")
    return out


def _root_schema(kind: type[CustomResource]) -> dict[str, Any]:
    translated = structural_schema(kind.model_json_schema(by_alias=True, mode="validation"))
    properties = translated["properties"]
    return {
        "description": translated["description"],
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "The versioned schema of this representation of an object.",
                "type": "string",
            },
            "kind": {
                "description": "The REST resource this object represents, in CamelCase.",
                "type": "string",
            },
            # The apiserver owns metadata's schema and rejects CRDs that constrain it further.
            "metadata": {"type": "object"},
            "spec": properties["spec"],
            "status": properties["status"],
        },
    }


def _crd(
    *,
    group: str,
    kind: str,
    plural: str,
    scope: str,
    version: dict[str, Any],
    short_names: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
) -> dict[str, Any]:
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
    }
    if short_names:
        names["shortNames"] = list(short_names)
    if categories:
        names["categories"] = list(categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": dict(PART_OF_LABEL)},
        "spec": {"group": group, "names": names, "scope": scope, "versions": [version]},
    }


def crd_manifest(kind: type[CustomResource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one mlcycle kind."""
    columns = []
    for column in kind.printer_columns:
        printed: dict[str, Any] = {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
        }
        if column.description:
            printed["description"] = column.description
        if column.priority:
            printed["priority"] = column.priority
        columns.append(printed)
    return _crd(
        group=GROUP,
        kind=kind.kind_name(),
        plural=kind.plural(),
        scope="Namespaced",
        short_names=kind.crd_names.short_names,
        categories=kind.crd_names.categories,
        version={
            "name": VERSION,
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": _root_schema(kind)},
            "subresources": {"status": {}},
            "additionalPrinterColumns": columns,
        },
    )


def _kopf_peering_crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    # kopf's own objects for peering (leader election between operator replicas), in the
    # shape kopf documents: kopf keeps its per-peer records under an open status.
    return _crd(
        group="kopf.dev",
        kind=kind,
        plural=plural,
        scope=scope,
        version={
            "name": "v1",
            "served": True,
            "storage": True,
            "schema": {
                "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            },
        },
    )


def generate_crds() -> dict[str, dict[str, Any]]:
    """Every CRD the operator needs, by file name (`<plural>.<group>.yaml`)."""
    crds = [
        *(crd_manifest(kind) for kind in KINDS),
        _kopf_peering_crd("KopfPeering", "kopfpeerings", "Namespaced"),
        _kopf_peering_crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
    ]
    return {f"{crd['metadata']['name']}.yaml": crd for crd in crds}


class _BlockStyleDumper(yaml.SafeDumper):
    """Multi-line strings (long CEL rules, descriptions) as readable `|` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


def render_yaml(crd: Mapping[str, Any]) -> str:
    """A CRD as YAML: keys sorted and no line wrapping, so output depends only on the models."""
    body = yaml.dump(
        crd, Dumper=_BlockStyleDumper, sort_keys=True, width=100_000, allow_unicode=True
    )
    return HEADER + body


def write_crds(output_dir: Path) -> list[Path]:
    """Write every CRD into `output_dir` and return the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, crd in generate_crds().items():
        path = output_dir / file_name
        path.write_text(render_yaml(crd), encoding="utf-8")
        written.append(path)
    return written
