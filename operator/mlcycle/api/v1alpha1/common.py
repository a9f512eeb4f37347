"""What every mlcycle kind is made of: the model base, metadata, status with conditions, the
embedded Kubernetes types (env, resources, pod overlay) and the CRD metadata beside the fields."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from mlcycle.api.v1alpha1.validation import (
    CelRule,
    KubeObject,
    LabelMap,
    ListType,
    ObjectName,
    Quantity,
    exactly_one_of,
)

GROUP: Final = "mlcycle.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
# `kubectl get mlcycle` lists every kind that carries this category.
CATEGORY: Final = "mlcycle"


# --- The model base -------------------------------------------------------------------------


class ApiModel(BaseModel):
    """Base of every API object: snake_case in Python, camelCase on the wire.

    Unknown fields are errors here; the apiserver already prunes them from stored objects,
    so this only catches typos in objects built in Python.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()
    """Rules over several fields of this object, placed on the object's schema node."""

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            rule.check(self)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if cls.cel_rules:
            node = handler.resolve_ref_schema(json_schema)
            node["x-kubernetes-validations"] = [rule.as_validation() for rule in cls.cel_rules]
        return json_schema


# --- Conditions and status ----------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One aspect of the object's state, as in metav1.Condition."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    """Condition type in CamelCase, such as `Ready`."""
    status: ConditionStatus
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    """Machine-readable CamelCase reason for the last transition."""
    message: str = Field(max_length=32768)
    """Human-readable details about the last transition."""
    last_transition_time: datetime.datetime
    """When `status` last changed."""
    observed_generation: int | None = Field(None, ge=0)
    """The `metadata.generation` this condition was computed from."""


Conditions = Annotated[list[Condition], Field(max_length=32), ListType.map("type")]


class StatusBase(ApiModel):
    """Status fields every kind shares."""

    observed_generation: int | None = Field(None, ge=0)
    """The `metadata.generation` the operator last acted on."""
    phase: str | None = None
    """A one-word summary of the state; the conditions hold the details."""
    conditions: Conditions = Field(default_factory=list)
    """Current conditions, one per type."""


# --- Embedded Kubernetes types --------------------------------------------------------------


class LocalObjectReference(ApiModel):
    """A reference to an object by name in the same namespace."""

    name: ObjectName


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace."""

    name: ObjectName
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    optional: bool | None = None
    """Whether the pod may start when the Secret or key is missing."""


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the same namespace."""

    name: ObjectName
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    optional: bool | None = None


class FieldRef(ApiModel):
    """A field of the pod, such as `metadata.name` or `status.podIP`."""

    field_path: str = Field(min_length=1, max_length=256)
    api_version: str | None = Field(None, max_length=64)


class ResourceFieldRef(ApiModel):
    """A resource request or limit of a container, such as `limits.memory`."""

    resource: str = Field(min_length=1, max_length=256)
    container_name: str | None = Field(None, max_length=63)
    divisor: Quantity | None = None


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from."""

    cel_rules = (
        exactly_one_of(
            "secret_key_ref",
            "config_map_key_ref",
            "field_ref",
            "resource_field_ref",
            what="valueFrom",
        ),
    )

    secret_key_ref: SecretKeyRef | None = None
    config_map_key_ref: ConfigMapKeyRef | None = None
    field_ref: FieldRef | None = None
    resource_field_ref: ResourceFieldRef | None = None


class EnvVar(ApiModel):
    """An environment variable of the container, as in core/v1."""

    cel_rules = (
        CelRule(
            rule="!(has(self.value) && has(self.valueFrom))",
            message="env: set value or valueFrom, not both",
            holds=lambda env: env.value is None or env.value_from is None,
        ),
    )

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = Field(None, max_length=65536)
    value_from: EnvVarSource | None = None


EnvList = Annotated[list[EnvVar], Field(max_length=256), ListType.map("name")]


class ResourceRequirements(ApiModel):
    """Compute resources of a container, including extended ones such as `nvidia.com/gpu`."""

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=32)
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=32)


class Toleration(ApiModel):
    """Lets pods schedule onto nodes with a matching taint."""

    key: str | None = Field(None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class VolumeMount(ApiModel):
    """Mounts one of `podTemplate.volumes` into the container."""

    name: str = Field(min_length=1, max_length=63)
    mount_path: str = Field(min_length=1, max_length=4096)
    read_only: bool | None = None
    sub_path: str | None = Field(None, max_length=4096)


class PodTemplateOverlay(ApiModel):
    """Pod settings laid over the pods mlcycle creates; everything else is mlcycle's."""

    node_selector: LabelMap = Field(default_factory=dict)
    tolerations: Annotated[list[Toleration], Field(max_length=64)] = Field(default_factory=list)
    affinity: KubeObject | None = None
    """A core/v1 Affinity, passed to the pod unchanged."""
    service_account_name: ObjectName | None = None
    volumes: Annotated[list[KubeObject], Field(max_length=64)] = Field(default_factory=list)
    """core/v1 Volumes, passed to the pod unchanged."""
    volume_mounts: Annotated[list[VolumeMount], Field(max_length=64)] = Field(default_factory=list)
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] = Field(
        default_factory=list
    )
    priority_class_name: ObjectName | None = None
    security_context: KubeObject | None = None
    """A core/v1 PodSecurityContext laid over mlcycle's, key by key. mlcycle's passes the
    "restricted" Pod Security Standard: `runAsNonRoot: true` (no `runAsUser`: the image's
    numeric non-root USER is kept) and `seccompProfile: RuntimeDefault`."""
    container_security_context: KubeObject | None = None
    """A core/v1 SecurityContext laid over mlcycle's container one, key by key. mlcycle's
    passes the "restricted" Pod Security Standard: `allowPrivilegeEscalation: false` and
    `capabilities.drop: [ALL]`; model servers and routers also run with
    `readOnlyRootFilesystem: true` and a writable `/tmp`. Set
    `readOnlyRootFilesystem: false` here for an image that writes elsewhere."""


class WorkloadTemplate(ApiModel):
    """Container settings shared by the pods of every kind that runs some."""

    env: EnvList = Field(default_factory=list)
    """Extra environment variables; `valueFrom` keeps secrets out of the object."""
    resources: ResourceRequirements | None = None
    pod_template: PodTemplateOverlay | None = None


# --- The custom resource itself ---------------------------------------------------------


class ObjectMeta(ApiModel):
    """The part of metadata mlcycle reads; the apiserver owns the rest."""

    # kopf bodies carry managedFields, ownerReferences and more that nothing here reads.
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    creation_timestamp: datetime.datetime | None = None
    deletion_timestamp: datetime.datetime | None = None


@dataclass(frozen=True)
class CrdNames:
    plural: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...] = (CATEGORY,)


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get`, read with a JSONPath from the object."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    description: str = ""
    priority: int = 0


PHASE_COLUMN: Final = PrinterColumn("Phase", ".status.phase", "string", "Current phase")
AGE_COLUMN: Final = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


class CustomResource(ApiModel):
    """A namespaced mlcycle object with its CRD metadata beside its fields.

    Subclasses declare `kind` as a one-value Literal, `spec`, `status`, `crd_names` and
    `printer_columns`; `crdgen` reads nothing else.
    """

    crd_names: ClassVar[CrdNames]
    printer_columns: ClassVar[tuple[PrinterColumn, ...]]

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def kind_name(cls) -> str:
        kind: str = cls.model_fields["kind"].default
        return kind

    @classmethod
    def plural(cls) -> str:
        return cls.crd_names.plural

    @classmethod
    def initial_phase(cls) -> str:
        """The phase of an accepted object the operator has not acted on yet."""
        raise NotImplementedError

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse a kopf body (or any mapping) into the typed object."""
        return cls.model_validate(_plain(body))


def _plain(value: Any) -> Any:
    # kopf hands out read-only mapping views, which pydantic does not take as objects.
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
