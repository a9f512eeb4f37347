"""Where the Go-built binaries of the local stack (and the CRDs it takes from Go modules)
live, and building or fetching them when missing."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOLCHAIN_DIR = REPO_ROOT / "dev" / "toolchain"


class ToolchainMissingError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("MLCYCLE_CACHE", Path.home() / ".cache" / "mlcycle"))


def pinned_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in (TOOLCHAIN_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key] = value
    return versions


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    helm: Path
    minio: Path

    def all(self) -> list[Path]:
        return [
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.helm,
            self.minio,
        ]


def binaries() -> Binaries:
    v = pinned_versions()
    bin_dir = cache_dir() / "bin"
    k8s = bin_dir / f"kubernetes-{v['KUBERNETES_VERSION']}"
    return Binaries(
        etcd=bin_dir / f"etcd-{v['ETCD_VERSION']}" / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=k8s / "kubectl",
        helm=bin_dir / f"helm-{v['HELM_VERSION']}" / "helm",
        minio=bin_dir / f"minio-{v['MINIO_VERSION']}" / "minio",
    )


def ensure_binaries(*, build: bool = True) -> Binaries:
    found = binaries()
    missing = [p for p in found.all() if not p.exists()]
    if missing and build:
        subprocess.run([str(TOOLCHAIN_DIR / "build.sh")], check=True)
        missing = [p for p in found.all() if not p.exists()]
    if missing:
        raise ToolchainMissingError(
            "local stack binaries missing (run `make toolchain`): " + ", ".join(map(str, missing))
        )
    return found


def gateway_api_crds_dir() -> Path:
    """The Gateway API standard-channel manifests of the pinned version (CRDs and the
    upstream ValidatingAdmissionPolicy guarding their upgrades)."""
    return cache_dir() / "crds" / f"gateway-api-{pinned_versions()['GATEWAY_API_VERSION']}"


def ensure_gateway_api_crds(*, fetch: bool = True) -> Path:
    found = gateway_api_crds_dir()
    if not (found / ".complete").exists() and fetch:
        subprocess.run([str(TOOLCHAIN_DIR / "build.sh")], check=True)
    if not (found / ".complete").exists():
        raise ToolchainMissingError(f"Gateway API CRDs missing (run `make toolchain`): {found}")
    return found
