"""A container's environment and command line, as the kubelet makes them: env, envFrom,
valueFrom (ConfigMap and Secret keys, the downward API, resource fields), the service
variables, and `$(VAR)` expansion (pkg/kubelet/kubelet_pods.go,
third_party/forked/golang/expansion).

Pure: the secrets and config maps the agent already read come in as arguments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from mlcycle.dev.nodeagent.podspec import ContainerSpec, EnvVarSource, PodView
from mlcycle.dev.nodeagent.quantity import parse_quantity


class ContainerConfigError(Exception):
    """The container's configuration cannot be resolved yet (missing secret or key)."""


class ContainerCreateError(Exception):
    """The container cannot be run by this agent at all as specified."""


def expand_references(text: str, lookup: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$$` escapes, unknown or unclosed references stay as
    written (a port of third_party/forked/golang/expansion/expand.go)."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            advance = 1
            if following == "$":
                out.append("$")
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:
                    out.append("$(")
                else:
                    name = text[cursor + 2 : closer]
                    out.append(lookup.get(name, f"$({name})"))
                    advance = closer - cursor
            else:
                out.append("$" + following)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def referenced_objects(
    container: ContainerSpec,
) -> tuple[frozenset[str], frozenset[str]]:
    """(secret names, config map names) the container's env needs the agent to read."""
    secrets = {e.name for e in container.env_from if e.kind == "secretRef"}
    config_maps = {e.name for e in container.env_from if e.kind == "configMapRef"}
    for var in container.env:
        if var.source and var.source.kind == "secretKeyRef":
            secrets.add(var.source.name)
        elif var.source and var.source.kind == "configMapKeyRef":
            config_maps.add(var.source.name)
    return frozenset(secrets), frozenset(config_maps)


@dataclass(frozen=True)
class EnvInputs:
    """Everything env resolution reads besides the container itself.

    `secrets` and `config_maps` map an object name to its decoded data; a name missing
    from the mapping means the object does not exist.
    """

    secrets: Mapping[str, Mapping[str, str]]
    config_maps: Mapping[str, Mapping[str, str]]
    pod_ip: str
    host_ip: str
    # Used for limits a container does not set, as the kubelet does with allocatable.
    node_allocatable: Mapping[str, str]
    service_env: Mapping[str, str]


def _field_value(pod: PodView, path: str, inputs: EnvInputs) -> str:
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account_name,
        "status.podIP": inputs.pod_ip,
        "status.podIPs": inputs.pod_ip,
        "status.hostIP": inputs.host_ip,
        "status.hostIPs": inputs.host_ip,
    }
    if path in simple:
        return simple[path]
    subscript = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if subscript:
        source = pod.labels if subscript.group(1) == "labels" else pod.annotations
        return source.get(subscript.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        source = pod.labels if path == "metadata.labels" else pod.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted(source.items()))
    raise ContainerCreateError(f"unsupported fieldRef fieldPath {path!r}")


def _resource_value(
    pod: PodView, container: ContainerSpec, source: EnvVarSource, inputs: EnvInputs
) -> str:
    target = container
    if source.container_name:
        named = [
            c for c in (*pod.init_containers, *pod.containers) if c.name == source.container_name
        ]
        if not named:
            raise ContainerCreateError(f"resourceFieldRef: no container {source.container_name!r}")
        target = named[0]
    kind, _, resource = source.key.partition(".")
    if kind not in ("limits", "requests") or not resource:
        raise ContainerCreateError(f"unsupported resourceFieldRef resource {source.key!r}")
    declared = target.limits if kind == "limits" else target.requests
    raw = declared.get(resource)
    if raw is None:
        raw = inputs.node_allocatable.get(resource, "0") if kind == "limits" else "0"
    divisor = parse_quantity(source.divisor) or Decimal(1)
    # Rounded up like the kubelet, so a 250m request with the default divisor reads as 1.
    return str(math.ceil(parse_quantity(raw) / divisor))


def _is_valid_env_name(name: str) -> bool:
    return bool(name) and "=" not in name and "\x00" not in name


def resolve_env(pod: PodView, container: ContainerSpec, inputs: EnvInputs) -> dict[str, str]:
    """The container's environment: envFrom, then env (later wins), then service variables.

    Raises ContainerConfigError when a required secret, config map or key is missing, the
    case the kubelet reports as CreateContainerConfigError and retries.
    """
    env: dict[str, str] = {}
    for env_from in container.env_from:
        if env_from.kind == "secretRef":
            data = inputs.secrets.get(env_from.name)
            what = "secret"
        else:
            data = inputs.config_maps.get(env_from.name)
            what = "configmap"
        if data is None:
            if env_from.optional:
                continue
            raise ContainerConfigError(f'{what} "{env_from.name}" not found')
        for key, value in data.items():
            name = env_from.prefix + key
            if _is_valid_env_name(name):
                env[name] = value

    for var in container.env:
        source = var.source
        if source is None:
            env[var.name] = expand_references(var.value, {**inputs.service_env, **env})
        elif source.kind in ("secretKeyRef", "configMapKeyRef"):
            is_secret = source.kind == "secretKeyRef"
            objects = inputs.secrets if is_secret else inputs.config_maps
            data = objects.get(source.name)
            if data is None:
                if source.optional:
                    continue
                what = "secret" if is_secret else "configmap"
                raise ContainerConfigError(f'{what} "{source.name}" not found')
            if source.key not in data:
                if source.optional:
                    continue
                what = "Secret" if is_secret else "ConfigMap"
                raise ContainerConfigError(
                    f"couldn't find key {source.key} in {what} {pod.namespace}/{source.name}"
                )
            env[var.name] = data[source.key]
        elif source.kind == "fieldRef":
            env[var.name] = _field_value(pod, source.key, inputs)
        elif source.kind == "unsupported":
            raise ContainerCreateError(f"env {var.name}: unsupported {source.key}")
        else:
            env[var.name] = _resource_value(pod, container, source, inputs)

    for name, value in inputs.service_env.items():
        env.setdefault(name, value)
    return env


def service_env(apiserver_host: str, apiserver_port: int) -> dict[str, str]:
    """The variables in-cluster clients use to find the apiserver (the `kubernetes` Service's
    link variables), pointing at the real apiserver since there is no service proxy here."""
    return {
        "KUBERNETES_SERVICE_HOST": apiserver_host,
        "KUBERNETES_SERVICE_PORT": str(apiserver_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(apiserver_port),
        "KUBERNETES_PORT": f"tcp://{apiserver_host}:{apiserver_port}",
    }


def build_argv(container: ContainerSpec, env: Mapping[str, str]) -> list[str]:
    """command + args with `$(VAR)` expanded; an image entrypoint cannot be run locally."""
    if not container.command:
        raise ContainerCreateError(
            f"container {container.name!r} has no command: the local node agent ignores "
            f"images (here {container.image or 'none'!r}) and cannot run their entrypoint; "
            "set command, e.g. [python, -m, your.module]"
        )
    return [expand_references(part, env) for part in (*container.command, *container.args)]


def pod_hostname(pod: PodView) -> str:
    return (pod.hostname or pod.name)[:63]
