"""A container's environment as it starts: the Secrets and ConfigMaps it names, read from
the API, and its service-account kubeconfig, put together by `envvars`' rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mlcycle.dev.nodeagent import envvars
from mlcycle.dev.nodeagent.config import HOST_IP, AgentConfig
from mlcycle.dev.nodeagent.kubeclient import Api
from mlcycle.dev.nodeagent.podspec import ContainerSpec, PodView
from mlcycle.dev.nodeagent.volumes import service_account_env


def container_env(
    api: Api,
    config: AgentConfig,
    service_env: Mapping[str, str],
    pod: PodView,
    spec: ContainerSpec,
    pod_ip: str,
    pod_dir: Path,
) -> dict[str, str]:
    """Raises envvars.ContainerConfigError while something it needs is missing."""
    secret_names, config_map_names = envvars.referenced_objects(spec)
    secrets = {
        name: data
        for name in secret_names
        if (data := api.secret_data(pod.namespace, name)) is not None
    }
    config_maps = {
        name: data
        for name in config_map_names
        if (data := api.config_map_data(pod.namespace, name)) is not None
    }
    inputs = envvars.EnvInputs(
        secrets=secrets,
        config_maps=config_maps,
        pod_ip=pod_ip,
        host_ip=HOST_IP,
        node_allocatable=config.capacity,
        service_env={**service_env, **service_account_env(api, config, pod, pod_dir)},
    )
    return {"HOSTNAME": envvars.pod_hostname(pod), **envvars.resolve_env(pod, spec, inputs)}
