"""Validation that travels into the CRD: CEL rules with their Python twins, list types, and
the constrained scalars (names, paths, durations, quantities) the kinds' fields use.

Each rule or constraint here is written once and lands in two places: the CRD schema the
apiserver enforces at `kubectl apply`, and the pydantic model the operator parses with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue, WithJsonSchema
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

# --- Validation that travels into the CRD -------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """A CEL rule the apiserver enforces (`x-kubernetes-validations`), with its Python twin.

    Cross-field rules must live in the CRD, or `kubectl apply` accepts what the operator later
    rejects. The twin (`holds`) makes the same decision when the operator parses an object,
    so unit tests and objects stored before a CRD upgrade meet the same rule. Transition
    rules (those reading `oldSelf`) have no twin: only the apiserver sees the old object.

    Use it as `Annotated[...]` metadata on a field or type, or in `ApiModel.cel_rules`.
    """

    rule: str
    message: str
    holds: Callable[[Any], bool] | None = None
    field_path: str | None = None

    def as_validation(self) -> dict[str, str]:
        validation = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            validation["fieldPath"] = self.field_path
        return validation

    def check(self, value: Any) -> None:
        if self.holds is not None and not self.holds(value):
            raise PydanticCustomError("cel_rule", self.message)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        def checked(value: Any) -> Any:
            self.check(value)
            return value

        return core_schema.no_info_after_validator_function(checked, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("x-kubernetes-validations", []).append(self.as_validation())
        return json_schema


@dataclass(frozen=True)
class ListType:
    """`x-kubernetes-list-type`: how server-side apply merges a list, and which duplicates
    the apiserver rejects; the Python twin rejects the same duplicates."""

    list_type: Literal["atomic", "set", "map"]
    map_keys: tuple[str, ...] = ()
    """Python field names of the items that identify them in a map list."""

    @classmethod
    def set(cls) -> ListType:
        return cls("set")

    @classmethod
    def map(cls, *keys: str) -> ListType:
        return cls("map", keys)

    def _identity(self, item: Any) -> Any:
        if self.list_type == "map":
            return tuple(getattr(item, key) for key in self.map_keys)
        return item

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        def unique(items: list[Any]) -> list[Any]:
            seen: list[Any] = []
            for item in items:
                identity = self._identity(item)
                if identity in seen:
                    raise PydanticCustomError(
                        "duplicate_list_item", "duplicate entry {identity}", {"identity": identity}
                    )
                seen.append(identity)
            return items

        if self.list_type == "atomic":
            return handler(source)
        return core_schema.no_info_after_validator_function(unique, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-list-type"] = self.list_type
        if self.map_keys:
            json_schema["x-kubernetes-list-map-keys"] = [to_camel(key) for key in self.map_keys]
        return json_schema


def exactly_one_of(*fields: str, what: str) -> CelRule:
    """The "one of" of Kubernetes APIs: optional fields of which exactly one is set.

    Expressed as optional properties plus a rule, because a structural schema cannot hold a
    union of object shapes.
    """
    wire = [to_camel(field) for field in fields]
    return CelRule(
        rule=" + ".join(f"(has(self.{name}) ? 1 : 0)" for name in wire) + " == 1",
        message=f"{what} must set exactly one of: {', '.join(wire)}",
        holds=lambda model: sum(getattr(model, field) is not None for field in fields) == 1,
    )


def immutable(what: str, because: str | None = None) -> CelRule:
    message = f"{what} is immutable" + (f": {because}" if because else "")
    return CelRule(rule="self == oldSelf", message=message)


def immutable_except(model: type[BaseModel], *mutable: str, message: str) -> CelRule:
    """A transition rule freezing every field of `model` but the `mutable` ones.

    Spelled out field by field because CEL cannot compare two objects minus a field; `has`
    on both sides also catches a field that was added or removed.
    """
    unknown = set(mutable) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no fields {sorted(unknown)}")
    clauses = []
    for name, field in model.model_fields.items():
        if name in mutable:
            continue
        wire = field.alias or name
        clauses.append(
            f"has(self.{wire}) == has(oldSelf.{wire})"
            f" && (!has(self.{wire}) || self.{wire} == oldSelf.{wire})"
        )
    return CelRule(rule="\n&& ".join(clauses), message=message)


# --- Scalar types with their wire syntax ----------------------------------------------------

DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
"""The name of a Kubernetes object in the same namespace."""

# A subset of what MLflow accepts (no '/' or ':', not a path that normalises elsewhere):
# names also end up in `models:/` URIs, tags and labels, so spaces and dots-first are out.
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
]

_RESERVED_ALIAS = CelRule(
    rule="self.lowerAscii() != 'latest' && !self.matches('^[vV][0-9]+$')",
    message="'latest' and version-like names such as v3 are reserved by MLflow",
    holds=lambda alias: (
        alias.lower() != "latest" and not (alias[:1] in ("v", "V") and alias[1:].isdigit())
    ),
)
AliasName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_-]+$"),
    _RESERVED_ALIAS,
]
"""An MLflow registered-model alias such as `champion`."""

ArtifactPath = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$",
    ),
]
"""A path relative to a run's artifact root, such as `model`."""

MetricName = Annotated[
    str, StringConstraints(min_length=1, max_length=250, pattern=r"^[A-Za-z0-9_./ -]+$")
]
"""An MLflow metric key."""

Duration = Annotated[
    str, StringConstraints(max_length=32, pattern=r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
]
"""A Go-style duration such as `30s`, `5m` or `1h30m`."""

LabelMap = Annotated[dict[str, str], Field(max_length=64)]

_QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def _quantity_syntax(value: int | str) -> int | str:
    if isinstance(value, str) and not re.match(_QUANTITY_PATTERN, value):
        raise PydanticCustomError(
            "quantity", "{value!r} is not a quantity such as 2, 500m or 4Gi", {"value": value}
        )
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_quantity_syntax),
    # The exact shape apiextensions allows for int-or-string, as controller-gen emits it.
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity: `2`, `500m`, `4Gi`."""

KubeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""An embedded Kubernetes type passed through to the pod unchanged (affinity, volumes...).

Modelling these would copy hundreds of core/v1 fields that mlcycle never reads; the
apiserver validates them when the pod is created.
"""
