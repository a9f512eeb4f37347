"""`python -m mlcycle.dev.nodeagent`: flags, logging, signals, then the agent."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from mlcycle.dev.nodeagent.quantity import parse_quantity
from mlcycle.jsonlog import configure_json_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlcycle.dev.nodeagent",
        description="Register a Node and run the pods bound to it as local processes "
        "(images are ignored: every container needs a command runnable here).",
    )
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster")
    parser.add_argument("--node-name", required=True)
    parser.add_argument(
        "--state-dir", required=True, type=Path, help="container logs, pid files, messages"
    )
    parser.add_argument("--cpu", default="4", help="CPU capacity (a quantity)")
    parser.add_argument("--memory", default="16Gi", help="memory capacity (a quantity)")
    parser.add_argument("--pods", default="110", help="how many pods the node accepts")
    parser.add_argument(
        "--extended-resource",
        action="append",
        default=[],
        metavar="NAME=COUNT",
        help="e.g. nvidia.com/gpu=2; repeatable",
    )
    parser.add_argument(
        "--pod-ip-prefix",
        default="127.77",
        help="prefix pod IPs are taken from (1-3 octets, under 127. or 198.18.0.0/15)",
    )
    parser.add_argument(
        "--apiserver-host", help="KUBERNETES_SERVICE_HOST for pods (default: from kubeconfig)"
    )
    parser.add_argument(
        "--apiserver-port", type=int, help="KUBERNETES_SERVICE_PORT (default: from kubeconfig)"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def _capacity(args: argparse.Namespace) -> dict[str, str]:
    for name, value in (("--cpu", args.cpu), ("--memory", args.memory), ("--pods", args.pods)):
        try:
            parse_quantity(value)
        except ValueError:
            raise SystemExit(f"{name}: {value!r} is not a quantity") from None
    args.state_dir.mkdir(parents=True, exist_ok=True)
    capacity = {
        "cpu": str(args.cpu),
        "memory": str(args.memory),
        "pods": str(args.pods),
        "ephemeral-storage": str(shutil.disk_usage(args.state_dir).total),
    }
    for entry in args.extended_resource:
        name, separator, count = entry.partition("=")
        if not separator or not name or not count.isdigit():
            raise SystemExit(f"--extended-resource {entry!r}: expected NAME=COUNT")
        capacity[name] = count
    return capacity


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    # Imported here so `--help` works without the kubernetes client's import cost.
    from kubernetes import client as kube_client
    from kubernetes import config as kube_config

    from mlcycle.dev.nodeagent.agent import NodeAgent
    from mlcycle.dev.nodeagent.config import AgentConfig
    from mlcycle.dev.nodeagent.kubeclient import Api
    from mlcycle.dev.nodeagent.processworker import ProcessNode

    configure_json_logging(args.log_level)
    # The client logs request bodies (secrets included) at debug level.
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)

    client_configuration = kube_client.Configuration()
    kube_config.load_kube_config(
        config_file=args.kubeconfig, client_configuration=client_configuration
    )
    # Pod workers, probes and the watch share the client; without room in the pool urllib3
    # keeps discarding connections (and warning about it).
    client_configuration.connection_pool_maxsize = 64
    api_client = kube_client.ApiClient(client_configuration)
    server = urlparse(client_configuration.host)
    config = AgentConfig(
        node_name=args.node_name,
        state_dir=args.state_dir.resolve(),
        capacity=_capacity(args),
        pod_ip_prefix=args.pod_ip_prefix,
        apiserver_host=args.apiserver_host or server.hostname or "127.0.0.1",
        apiserver_port=args.apiserver_port or server.port or 443,
        work_dir=os.getcwd(),
        ca_file=client_configuration.ssl_ca_cert,
    )
    api = Api(api_client)
    agent = NodeAgent(config, api, ProcessNode(config, api))

    def stop(signum: int, _frame: FrameType | None) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0
