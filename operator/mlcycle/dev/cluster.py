"""The local stack: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, our node
agent, an S3 store (MinIO) and an MLflow tracking server, all on loopback.

Everything lives in one state directory (certificates, kubeconfig, data, logs, pid files),
never in ~/.kube. `up` is idempotent: it starts only what is not running.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import yaml

from mlcycle.dev.objectstore import ensure_bucket
from mlcycle.dev.pki import ClusterPki, ensure_cluster_pki
from mlcycle.dev.processes import ProcessGroup, free_port, wait_until
from mlcycle.dev.prometheus import ensure_prometheus_binary, write_scrape_config
from mlcycle.dev.stackconfig import StackConfig
from mlcycle.dev.toolchain import (
    REPO_ROOT,
    Binaries,
    binaries,
    ensure_binaries,
    ensure_gateway_api_crds,
)

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
OPTIONAL_COMPONENTS = ("node-agent", "s3", "mlflow")
NODE_NAME = "mlcycle-local"
ARTIFACT_BUCKET = "mlflow"
SERVICE_CLUSTER_IP_RANGE = (
    "10.96.0.0/16"  # virtual IPs only stored in objects; nothing routes there
)

DEFAULT_STATE_DIR = REPO_ROOT / ".stack"


class LocalStack:
    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir.resolve()
        self.processes = ProcessGroup(self.state_dir)
        self.kubeconfig = self.state_dir / "kubeconfig"
        self._config_file = self.state_dir / "stack.json"

    # ---- configuration -------------------------------------------------------------
    def config(self) -> StackConfig:
        if self._config_file.exists():
            return StackConfig(**json.loads(self._config_file.read_text()))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        config = StackConfig.allocate()
        self._config_file.write_text(json.dumps(asdict(config), indent=2))
        self._config_file.chmod(0o600)
        return config

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.config().apiserver_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.config().mlflow_port}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.config().s3_port}"

    def env(self) -> dict[str, str]:
        """What a shell, a test or the operator needs to talk to this stack."""
        config = self.config()
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": config.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": config.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLCYCLE_STACK_DIR": str(self.state_dir),
        }

    # ---- lifecycle -----------------------------------------------------------------
    def up(self, without: Iterable[str] = ()) -> None:
        skipped = set(without)
        unknown = skipped - set(OPTIONAL_COMPONENTS)
        if unknown:
            raise ValueError(
                f"unknown components {sorted(unknown)}; choose from {OPTIONAL_COMPONENTS}"
            )
        if "s3" in skipped:
            skipped.add("mlflow")  # MLflow's artifact store is the S3 server
        binaries = ensure_binaries()
        config = self.config()
        pki = ensure_cluster_pki(self.state_dir / "pki")
        self._write_kubeconfig(pki, config)
        self._start_etcd(binaries, config)
        self._start_apiserver(binaries, config, pki)
        self._start_controller_manager(binaries, config, pki)
        self._start_scheduler(binaries, config)
        if "s3" not in skipped:
            self._start_s3(binaries, config)
        if "mlflow" not in skipped:
            self._start_mlflow(config)
        if "node-agent" not in skipped:
            self._start_node_agent(config)

    def down(self) -> None:
        # Reverse order: the node agent kills its pods while the apiserver still answers.
        order = ["prometheus", "node-agent", "mlflow", "s3", *reversed(CONTROL_PLANE)]
        for name in order + [n for n in self.processes.names() if n not in order]:
            self.processes.stop(name)

    def stop_mlflow(self) -> None:
        """Stop only the MLflow server, as an outage would; `start_mlflow` brings it back
        on the same port and database."""
        self.processes.stop("mlflow")

    def start_mlflow(self) -> None:
        self._start_mlflow(self.config())

    @property
    def prometheus_url(self) -> str:
        """Where `start_prometheus` serves; the port is chosen once per stack."""
        port_file = self.state_dir / "prometheus" / "web-port"
        if not port_file.exists():
            port_file.parent.mkdir(parents=True, exist_ok=True)
            port_file.write_text(str(free_port()))
        return f"http://127.0.0.1:{int(port_file.read_text())}"

    def start_prometheus(self, scrape_targets: list[str]) -> str:
        """A Prometheus server scraping `host:port` targets every second; returns its URL.

        Optional, never started by `up`; stopped by `down`. Its data stays in the state
        directory, so a restart keeps the series. Called again with other targets, it
        restarts with the new configuration on the same port.
        """
        binary = ensure_prometheus_binary()
        url = self.prometheus_url
        home = self.state_dir / "prometheus"
        if write_scrape_config(home / "prometheus.yml", scrape_targets):
            self.processes.stop("prometheus")
        self._ensure_running(
            "prometheus",
            [
                str(binary),
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            ready_when=lambda: _http_ok(f"{url}/-/ready"),
            what="Prometheus /-/ready",
            timeout=60,
        )
        return url

    def stop_prometheus(self) -> None:
        """Stop Prometheus, as an outage would; `start_prometheus` brings it back."""
        self.processes.stop("prometheus")

    def kubectl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [str(binaries().kubectl), *args],
            env={**_base_env(), **self.env()},
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def install_crds(self) -> None:
        crds = str(REPO_ROOT / "crds")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", crds)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", crds)

    def install_gateway_api_crds(self) -> list[str]:
        """Install the pinned Gateway API standard channel, as upstream's standard-install
        does, and wait until its CRDs serve; returns their names. Idempotent.

        Only the API: no gateway controller runs, so routes are validated and stored (by
        the CRDs' OpenAPI schemas and CEL rules) but never programmed into a proxy.
        """
        manifests = ensure_gateway_api_crds()
        crd_names = [
            f"crd/{document['metadata']['name']}"
            for path in sorted(manifests.glob("*.yaml"))
            for document in yaml.safe_load_all(path.read_text())
            if document and document.get("kind") == "CustomResourceDefinition"
        ]
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifests))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crd_names)
        return [name.removeprefix("crd/") for name in crd_names]

    def start_operator(self, namespace: str) -> str:
        """`mlcycle run` as a process of the stack (stopped by `down`); returns its HTTP URL."""
        url = f"http://127.0.0.1:{free_port()}"
        port = url.rsplit(":", 1)[1]
        self._ensure_running(
            "operator",
            [
                sys.executable,
                "-m",
                "mlcycle.cli",
                "run",
                f"--namespace={namespace}",
                "--http-host=127.0.0.1",
                f"--http-port={port}",
            ],
            env={**_base_env(), **self.env()},
            cwd=REPO_ROOT,
            ready_when=lambda: _http_ok(f"{url}/readyz"),
            what="operator /readyz",
        )
        return url

    def status(self) -> dict[str, bool]:
        names = [*CONTROL_PLANE, *OPTIONAL_COMPONENTS]
        return {name: self.processes.running(name) for name in names}

    # ---- components ----------------------------------------------------------------
    def _ensure_running(
        self,
        name: str,
        argv: list[str],
        *,
        ready_when: Callable[[], bool],
        what: str,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        if not self.processes.running(name):
            self.processes.start(name, argv, env=env, cwd=cwd)
        wait_until(
            what,
            ready_when,
            timeout=timeout,
            interval=0.25 if timeout <= 120 else 0.5,
            log_hint=self.state_dir / "logs" / f"{name}.log",
        )

    def _start_etcd(self, binaries: Binaries, config: StackConfig) -> None:
        peer = f"http://127.0.0.1:{config.etcd_peer_port}"
        client = f"http://127.0.0.1:{config.etcd_port}"
        self._ensure_running(
            "etcd",
            [
                str(binaries.etcd),
                "--name=local",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
                # A throwaway dev store: fsync per write would make every test slower
                # for durability nobody needs here.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            ready_when=lambda: _http_ok(f"http://127.0.0.1:{config.etcd_port}/health"),
            what="etcd health",
            timeout=60,
        )

    def _start_apiserver(self, binaries: Binaries, config: StackConfig, pki: ClusterPki) -> None:
        self._ensure_running(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{config.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={config.apiserver_port}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                # On top of the default plugins (PodSecurity among them), the one OpenShift
                # and hardened clusters add: setting an ownerReference that blocks the
                # owner's deletion needs `update` on the owner's `finalizers` subresource.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--allow-privileged=true",
                # The `kubernetes` Service's Endpoints would carry 127.0.0.1, which
                # Endpoints validation rejects; pods reach the apiserver through the
                # KUBERNETES_SERVICE_HOST the node agent sets instead.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
            ],
            ready_when=lambda: _https_ok(f"{self.apiserver_url}/readyz", pki),
            what="kube-apiserver /readyz",
            timeout=120,
        )

    def _start_controller_manager(
        self, binaries: Binaries, config: StackConfig, pki: ClusterPki
    ) -> None:
        kubeconfig = str(self.kubeconfig)
        self._ensure_running(
            "kube-controller-manager",
            [
                str(binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={config.controller_manager_port}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--leader-elect=false",
                "--v=1",
            ],
            ready_when=lambda: _https_ok(
                f"https://127.0.0.1:{config.controller_manager_port}/healthz"
            ),
            what="kube-controller-manager /healthz",
            timeout=60,
        )

    def _start_scheduler(self, binaries: Binaries, config: StackConfig) -> None:
        kubeconfig = str(self.kubeconfig)
        self._ensure_running(
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={config.scheduler_port}",
                "--leader-elect=false",
                "--v=1",
            ],
            ready_when=lambda: _https_ok(f"https://127.0.0.1:{config.scheduler_port}/healthz"),
            what="kube-scheduler /healthz",
            timeout=60,
        )

    def _start_s3(self, binaries: Binaries, config: StackConfig) -> None:
        data = self.state_dir / "s3"
        data.mkdir(parents=True, exist_ok=True)
        self._ensure_running(
            "s3",
            [
                str(binaries.minio),
                "server",
                str(data),
                f"--address=127.0.0.1:{config.s3_port}",
                f"--console-address=127.0.0.1:{config.s3_console_port}",
                "--quiet",
            ],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(self.state_dir),
                "MINIO_ROOT_USER": config.s3_access_key,
                "MINIO_ROOT_PASSWORD": config.s3_secret_key,
                # No phoning home: this machine reaches package registries only.
                "MINIO_UPDATE": "off",
                "MINIO_BROWSER": "off",
            },
            ready_when=lambda: _http_ok(f"{self.s3_url}/minio/health/live"),
            what="S3 store (MinIO) health",
            timeout=60,
        )
        ensure_bucket(self.s3_url, config.s3_access_key, config.s3_secret_key, ARTIFACT_BUCKET)

    def _start_mlflow(self, config: StackConfig) -> None:
        data = self.state_dir / "mlflow"
        data.mkdir(parents=True, exist_ok=True)
        self._ensure_running(
            "mlflow",
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                f"--backend-store-uri=sqlite:///{data / 'mlflow.db'}",
                f"--artifacts-destination=s3://{ARTIFACT_BUCKET}/artifacts",
                "--host=127.0.0.1",
                f"--port={config.mlflow_port}",
                "--workers=1",
            ],
            env={**_base_env(), **self.env()},
            # /health answers before the tracking and registry stores exist; MLflow builds
            # them on their first request, which can outlast a client's timeout on a busy
            # machine (seen right after an outage test restarted the server).
            ready_when=lambda: all(
                _http_ok(f"{self.mlflow_url}{path}")
                for path in (
                    "/health",
                    "/api/2.0/mlflow/experiments/get?experiment_id=0",
                    "/api/2.0/mlflow/registered-models/search?max_results=1",
                )
            ),
            what="MLflow tracking server and its stores",
            timeout=180,
        )

    def _start_node_agent(self, config: StackConfig) -> None:
        self._ensure_running(
            "node-agent",
            [
                sys.executable,
                "-m",
                "mlcycle.dev.nodeagent",
                f"--kubeconfig={self.kubeconfig}",
                f"--node-name={NODE_NAME}",
                f"--state-dir={self.state_dir / 'node'}",
                f"--cpu={config.node_cpu}",
                f"--memory={config.node_memory}",
                f"--extended-resource=nvidia.com/gpu={config.node_gpus}",
                f"--pod-ip-prefix={config.pod_ip_prefix}",
            ],
            env={**_base_env(), "KUBECONFIG": str(self.kubeconfig)},
            cwd=REPO_ROOT,
            ready_when=self._node_ready,
            what=f"node {NODE_NAME} Ready",
            timeout=60,
        )

    def _node_ready(self) -> bool:
        pki = ensure_cluster_pki(self.state_dir / "pki")
        node = json.loads(_https_get(f"{self.apiserver_url}/api/v1/nodes/{NODE_NAME}", pki))
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _write_kubeconfig(self, pki: ClusterPki, config: StackConfig) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "mlcycle-local",
                    "cluster": {
                        "server": f"https://127.0.0.1:{config.apiserver_port}",
                        "certificate-authority-data": b64(pki.ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "mlcycle-admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin.cert),
                        "client-key-data": b64(pki.admin.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "mlcycle-local",
                    "context": {"cluster": "mlcycle-local", "user": "mlcycle-admin"},
                }
            ],
            "current-context": "mlcycle-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        self.kubeconfig.chmod(0o600)


def _base_env() -> dict[str, str]:
    """A child's environment without the caller's KUBECONFIG or cloud credentials."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "MLCYCLE_CACHE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    # Nothing on the local stack reports usage to the internet (it cannot reach it anyway,
    # and each attempt delays the first MLflow call by a timeout).
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def _tls_context(pki: ClusterPki | None) -> ssl.SSLContext:
    if pki is None:
        # Controller-manager and scheduler serve /healthz with self-signed certs and allow
        # it without authentication; nothing secret is sent.
        context = ssl._create_unverified_context()
    else:
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    return context


def _https_get(url: str, pki: ClusterPki | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=3, context=_tls_context(pki)) as response:
        body: bytes = response.read()
        return body


def _https_ok(url: str, pki: ClusterPki | None = None) -> bool:
    return _https_get(url, pki).strip() == b"ok"
