"""What a local stack is created with: free ports for its components, a pod IP range of its
own, and S3 keys, chosen once (`LocalStack` keeps them in its state directory).
"""

from __future__ import annotations

import random
import secrets
import subprocess
from dataclasses import dataclass, field

from mlcycle.dev.processes import free_port


@dataclass
class StackConfig:
    """What a stack was created with; written once so a later `up` restarts it the same way."""

    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    controller_manager_port: int
    scheduler_port: int
    s3_port: int
    s3_console_port: int
    mlflow_port: int
    pod_ip_prefix: str
    s3_access_key: str = "mlcycle"
    s3_secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    node_cpu: str = "8"
    node_memory: str = "16Gi"
    node_gpus: int = 2

    @classmethod
    def allocate(cls) -> StackConfig:
        return cls(
            etcd_port=free_port(),
            etcd_peer_port=free_port(),
            apiserver_port=free_port(),
            controller_manager_port=free_port(),
            scheduler_port=free_port(),
            s3_port=free_port(),
            s3_console_port=free_port(),
            mlflow_port=free_port(),
            pod_ip_prefix=_pod_ip_prefix(),
        )


# RFC 2544's benchmarking range: never routed on real networks, so routing it to `lo` on
# this machine shadows nothing.
POD_NETWORK = "198.18.0.0/15"


def _pod_ip_prefix() -> str:
    """A range of pod IPs of this stack's own, so two stacks on one machine (a demo and a
    test run) never hand out the same address.

    The API server refuses loopback addresses in EndpointSlices, which would leave every
    Service without endpoints; so pods get addresses of POD_NETWORK, made local to this
    machine by one `local` route on `lo` (as 127/8 is). Without the right to add that
    route (not root), pods fall back to loopback addresses and Services stay empty.
    """
    if _ensure_pod_network():
        block = random.randrange(512)
        return f"198.{18 + block // 256}.{block % 256}"
    return f"127.{random.randint(16, 250)}"


def _ensure_pod_network() -> bool:
    try:
        shown = subprocess.run(
            ["ip", "route", "show", "table", "local", POD_NETWORK],
            capture_output=True,
            text=True,
            check=True,
        )
        if shown.stdout.strip():
            return True
        added = subprocess.run(
            ["ip", "route", "add", "local", POD_NETWORK, "dev", "lo"],
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    return added.returncode == 0
