"""An optional Prometheus server for the local stack: the real server, from the Debian
package, scraping static targets every second.

Not part of `LocalStack.up()`: only the analysis' Prometheus checks need it, and a
Prometheus on every stack would scrape for nothing. The binary is not built from Go like
the control plane (its web UI assets need a Node.js build); the distribution's package
is the same server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mlcycle.dev.toolchain import ToolchainMissingError

PACKAGE = "prometheus"
SCRAPE_INTERVAL = "1s"
SCRAPE_JOB = "local"
# apt-get refuses to run while another apt-get holds the dpkg lock; wait for it instead.
_APT_LOCK_WAIT_SECONDS = 300


def ensure_prometheus_binary() -> Path:
    """The `prometheus` server binary, installing the Debian package when missing (as root).

    Installing is idempotent and takes the dpkg lock, so concurrent callers wait in turn.
    """
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolchainMissingError(
            "the prometheus server is not installed; install the `prometheus` package"
            " (apt-get install prometheus) or put a prometheus binary on PATH"
        )
    install = [
        "apt-get",
        "-o",
        f"DPkg::Lock::Timeout={_APT_LOCK_WAIT_SECONDS}",
        "install",
        "-y",
        "--no-install-recommends",
        PACKAGE,
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # A fresh image has no package lists yet.
        update = ["apt-get", "-o", f"DPkg::Lock::Timeout={_APT_LOCK_WAIT_SECONDS}", "update"]
        subprocess.run(update, env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which("prometheus")
    if not found:
        raise ToolchainMissingError("the prometheus package installed no prometheus binary")
    return Path(found)


def scrape_config(scrape_targets: Sequence[str]) -> dict[str, Any]:
    """prometheus.yml scraping `host:port` targets every second, so a test or a demo sees a
    new value within a couple of seconds."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": SCRAPE_JOB, "static_configs": [{"targets": list(scrape_targets)}]}
        ],
    }


def write_scrape_config(path: Path, scrape_targets: Sequence[str]) -> bool:
    """Write the configuration; True when it changed."""
    text = yaml.safe_dump(scrape_config(scrape_targets), sort_keys=False)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True
