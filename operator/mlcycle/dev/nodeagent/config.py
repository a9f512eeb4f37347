"""What the agent is told at start: the node's name, capacity, state dir and apiserver."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# The Node's InternalIP and every pod's hostIP: the pods run on this machine.
HOST_IP = "127.0.0.1"


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    state_dir: Path
    capacity: Mapping[str, str]
    pod_ip_prefix: str
    apiserver_host: str
    apiserver_port: int
    work_dir: str
    ca_file: str | None = None
    """The apiserver's CA, for the service-account kubeconfigs of pods."""
    python_bin_dir: str = field(default_factory=lambda: os.path.dirname(sys.executable))

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    def base_process_env(self) -> dict[str, str]:
        """What every container starts from instead of the agent's own environment (which
        holds the kubeconfig path and whatever the developer exported)."""
        path = os.pathsep.join(
            p for p in (self.python_bin_dir, os.environ.get("PATH", "/usr/bin:/bin")) if p
        )
        return {
            "PATH": path,
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
