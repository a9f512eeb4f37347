"""`mlcycle`: the command line of the operator, the data plane, generated files, the local stack.

Each subcommand parses its flags and hands over to the package that does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from mlcycle.config import OperatorConfig
    from mlcycle.runtime import configure_logging, run_operator

    namespaces = [ns for value in args.namespace for ns in value.split(",") if ns]
    config = OperatorConfig(
        namespaces=[] if args.all_namespaces else namespaces,
        peering_name=args.peering,
        standalone=args.standalone,
        http_host=args.http_host,
        http_port=args.http_port,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
        mlflow_credentials_secret=args.mlflow_credentials_secret,
        prometheus_url=args.prometheus_url,
        mlflow_ui_url=args.mlflow_ui_url,
        serving_image=args.serving_image,
        drift_check_seconds=args.drift_check_seconds,
        log_level=args.log_level,
        log_json=not args.plain_logs,
        **({"priority": args.priority} if args.priority is not None else {}),
    )
    configure_logging(config)
    asyncio.run(run_operator(config))
    return 0


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _serve(args: argparse.Namespace) -> int:
    from mlcycle.dataplane.server.config import ServerConfig
    from mlcycle.dataplane.server.main import serve

    buckets = (
        {"prediction_buckets": tuple(float(v) for v in args.prediction_buckets.split(","))}
        if args.prediction_buckets
        else {}
    )
    serve(
        ServerConfig(
            model_uri=args.model_uri,
            model_name=args.model_name,
            model_version=args.model_version,
            host=args.host,
            port=args.port,
            grpc_port=None if args.no_grpc else args.grpc_port,
            workers=args.workers,
            max_batch_size=args.max_batch_size,
            max_batch_wait_ms=args.max_batch_wait_ms,
            force_pyfunc=args.pyfunc,
            row_independent=args.row_independent,
            graceful_shutdown_seconds=args.graceful_shutdown_seconds,
            log_level=args.log_level,
            **buckets,
            # Flags left unset take ServerConfig's defaults, which are stated once, there.
            **{
                name: getattr(args, name)
                for name in (
                    "predict_threads",
                    "inline_predict_ms",
                    "request_timeout_seconds",
                    "max_request_bytes",
                )
                if getattr(args, name) is not None
            },
        )
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from mlcycle.api.crdgen import write_crds

    for path in write_crds(Path(args.output_dir)):
        print(path)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from mlcycle.api.troubleshooting import write_readme

    changed = write_readme(Path(args.readme))
    print(f"{args.readme}: troubleshooting table {'rewritten' if changed else 'up to date'}")
    return 0


def _remove_finalizers(args: argparse.Namespace) -> int:
    from mlcycle.adapters.finalizers import remove_finalizers
    from mlcycle.adapters.kube import new_api_client
    from mlcycle.api.v1alpha1 import FINALIZER

    namespaces = [ns for value in args.namespace for ns in value.split(",") if ns]
    released = 0
    for each in remove_finalizers(new_api_client(), namespaces):
        print(f"released {each.kind} {each.namespace}/{each.name}")
        released += 1
    print(f"{released} object(s) released from {FINALIZER}")
    return 0


def _stack(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from mlcycle.dev.cluster import LocalStack

    return LocalStack(Path(args.state_dir))


def _cluster_up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    without = [c for value in args.without for c in value.split(",") if c]
    stack.up(without=without)
    print(f"local stack up in {stack.state_dir}")
    print(f"  kubeconfig: {stack.kubeconfig}")
    print(f'  run: eval "$(mlcycle dev cluster env --state-dir {stack.state_dir})"')
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    _stack(args).down()
    return 0


def _cluster_env(args: argparse.Namespace) -> int:
    for key, value in _stack(args).env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    status = _stack(args).status()
    print(json.dumps(status, indent=2))
    return 0 if all(status.values()) else 1


def _node_agent(args: argparse.Namespace) -> int:
    from mlcycle.dev.nodeagent import main as node_agent_main

    result: int = node_agent_main(args.agent_args)
    return result


def _router(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from mlcycle.dataplane.router.app import RouterSettings, main

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    try:
        settings = RouterSettings(
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            admin_host=args.admin_host,
            admin_port=args.admin_port,
            config_file=args.config_file,
            configmap=args.configmap,
            configmap_key=args.configmap_key,
            namespace=args.namespace,
            drain_seconds=args.drain_seconds,
            log_level=args.log_level,
        )
    except ValidationError as error:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())
        raise SystemExit(f"mlcycle router: {problems}") from None
    return main(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlcycle", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="start the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=os.environ.get("MLCYCLE_NAMESPACES", "").split(",")
        if os.environ.get("MLCYCLE_NAMESPACES")
        else [],
        help="watch only this namespace (repeat or comma-separate)",
    )
    run.add_argument("--peering", default="mlcycle", help="peering object shared by replicas")
    run.add_argument("--standalone", action="store_true", help="no peering (a single replica only)")
    run.add_argument(
        "--priority", type=int, default=None, help="peering priority (default: random)"
    )
    run.add_argument("--http-host", default="0.0.0.0")
    run.add_argument("--http-port", type=int, default=8080, help="/healthz, /readyz, /metrics")
    run.add_argument(
        "--mlflow-tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking server; the operator's credentials come from MLflow's own "
        "MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN variables (a user:password@ here is "
        "accepted, kept from pods and status, but visible in the process list)",
    )
    run.add_argument(
        "--mlflow-credentials-secret",
        default=os.environ.get("MLCYCLE_MLFLOW_CREDENTIALS_SECRET") or None,
        help="Secret in each workload's namespace with MLFLOW_TRACKING_USERNAME, "
        "MLFLOW_TRACKING_PASSWORD and/or MLFLOW_TRACKING_TOKEN for training and serving pods",
    )
    run.add_argument(
        "--mlflow-ui-url",
        default=os.environ.get("MLCYCLE_MLFLOW_UI_URL"),
        help="the MLflow UI's address for users, in status.mlflowRunUrl"
        " (default: the tracking URI when it is http(s))",
    )
    run.add_argument(
        "--prometheus-url",
        default=os.environ.get("MLCYCLE_PROMETHEUS_URL"),
        help="Prometheus for rollout analysis queries (spec.analysis.prometheus)",
    )
    run.add_argument(
        "--drift-check-seconds",
        type=float,
        default=float(os.environ.get("MLCYCLE_DRIFT_CHECK_SECONDS", "60")),
        help="how often a Ready ModelVersion is compared with MLflow (default 60)",
    )
    run.add_argument(
        "--serving-image",
        default=os.environ.get("MLCYCLE_SERVING_IMAGE"),
        help="image of model servers and routers whose InferenceService names none",
    )
    run.add_argument("--log-level", default=os.environ.get("MLCYCLE_LOG_LEVEL", "INFO"))
    run.add_argument(
        "--plain-logs", action="store_true", help="human-readable logs instead of JSON"
    )
    run.set_defaults(func=_run)

    serve = commands.add_parser(
        "serve", help="serve an MLflow model (MLflow scoring protocol and Open Inference v2)"
    )
    serve.add_argument(
        "--model-uri",
        default=os.environ.get("MLCYCLE_MODEL_URI"),
        required=not os.environ.get("MLCYCLE_MODEL_URI"),
        help="models:/name/version, models:/name@alias, runs:/..., s3://..., "
        "mlflow-artifacts:/... or a local model directory",
    )
    serve.add_argument("--model-name", help="name served and labelled (default: from the URI)")
    serve.add_argument("--model-version", help="version label (default: the registry's)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    grpc = serve.add_mutually_exclusive_group()
    grpc.add_argument(
        "--grpc-port", type=int, default=8081, help="Open Inference Protocol over gRPC"
    )
    grpc.add_argument("--no-grpc", action="store_true", help="serve HTTP only")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.add_argument("--max-batch-size", type=int, default=64, help="rows per predict call")
    serve.add_argument(
        "--max-batch-wait-ms",
        type=float,
        default=0.0,
        help="how long a partial batch waits for more requests (0: no added latency)",
    )
    serve.add_argument(
        "--pyfunc", action="store_true", help="load as MLflow pyfunc even with a native flavor"
    )
    serve.add_argument(
        "--row-independent",
        type=_boolean,
        default=None,
        help="true: each output row depends on its input row alone, so concurrent requests "
        "may share a predict call; false: never merge (default: known from the flavor)",
    )
    serve.add_argument(
        "--predict-threads", type=int, help="predicts running at once, off the loop (1)"
    )
    serve.add_argument(
        "--inline-predict-ms",
        type=float,
        help="native-flavor predicts measured below this run on the event loop (1; 0: never)",
    )
    serve.add_argument(
        "--request-timeout-seconds",
        type=float,
        default=os.environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"),
        help="a prediction not done in this time is answered 504 "
        "(60, or MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT as for mlflow models serve)",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=int,
        help="larger request bodies are answered 413 (100 MiB)",
    )
    serve.add_argument("--graceful-shutdown-seconds", type=float, default=30.0)
    serve.add_argument(
        "--prediction-buckets", help="comma-separated histogram buckets for regression outputs"
    )
    serve.add_argument("--log-level", default=os.environ.get("MLCYCLE_LOG_LEVEL", "INFO"))
    serve.set_defaults(func=_serve)

    crds = commands.add_parser("crds", help="write the generated CRDs, one file per kind")
    crds.add_argument("--output-dir", required=True)
    crds.set_defaults(func=_crds)

    docs = commands.add_parser(
        "docs", help="rewrite the README's troubleshooting table from the API's reasons"
    )
    docs.add_argument("--readme", required=True, help="the README holding the table's markers")
    docs.set_defaults(func=_docs)

    release = commands.add_parser(
        "remove-finalizers",
        help="after uninstalling the operator: release its objects so deletions complete",
        description=(
            "Removes mlcycle's finalizer from every TrainingJob, ModelVersion and "
            "InferenceService, skipping the cleanup the operator would have done (a running "
            "training's MLflow run stays RUNNING; a deletionPolicy is not applied). Run it "
            "once the operator is stopped: a running operator puts the finalizer back."
        ),
    )
    release.add_argument(
        "--namespace", "-n", action="append", default=[], help="repeatable; default all"
    )
    release.set_defaults(func=_remove_finalizers)

    router = commands.add_parser(
        "router", help="the data-plane router in front of one InferenceService's versions"
    )
    source = router.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-file", type=Path, help="static configuration (reread on SIGHUP)")
    source.add_argument("--configmap", help="ConfigMap holding the configuration (watched)")
    from mlcycle.api.routerconfig import DEFAULT_CONFIGMAP_KEY

    router.add_argument(
        "--configmap-key", default=DEFAULT_CONFIGMAP_KEY, help="key inside the ConfigMap"
    )
    router.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="namespace of the ConfigMap and the EndpointSlices (default: $POD_NAMESPACE)",
    )
    router.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="default: $KUBECONFIG, else the pod's service account",
    )
    router.add_argument("--host", default="0.0.0.0")
    router.add_argument("--port", type=int, default=8080, help="the proxy port")
    router.add_argument(
        "--grpc-port", type=int, default=8081, help="the gRPC proxy port (HTTP/2, no TLS)"
    )
    router.add_argument("--admin-host", default="0.0.0.0")
    router.add_argument("--admin-port", type=int, default=9090, help="/metrics, /healthz, /readyz")
    router.add_argument(
        "--drain-seconds", type=float, default=30.0, help="on SIGTERM, wait this long for requests"
    )
    router.add_argument("--log-level", default=os.environ.get("MLCYCLE_LOG_LEVEL", "INFO"))
    router.set_defaults(func=_router)

    dev = commands.add_parser("dev", help="the local stack for development, tests and the demo")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    cluster = dev_commands.add_parser("cluster", help="etcd, control plane, node agent, MLflow, S3")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    from mlcycle.dev.cluster import DEFAULT_STATE_DIR, OPTIONAL_COMPONENTS

    for name, func, help_text in (
        ("up", _cluster_up, "start whatever is not running"),
        ("down", _cluster_down, "stop every process of the stack"),
        ("env", _cluster_env, "print shell exports for KUBECONFIG, MLflow and S3"),
        ("status", _cluster_status, "which components are running"),
    ):
        command = cluster_commands.add_parser(name, help=help_text)
        command.add_argument(
            "--state-dir", default=os.environ.get("MLCYCLE_STACK_DIR", str(DEFAULT_STATE_DIR))
        )
        if name == "up":
            command.add_argument(
                "--without",
                action="append",
                default=[],
                help=f"skip components (comma-separated): {', '.join(OPTIONAL_COMPONENTS)}",
            )
        command.set_defaults(func=func)

    agent = dev_commands.add_parser(
        "node-agent", help="the kubelet stand-in (see --help)", add_help=False
    )
    agent.add_argument("agent_args", nargs=argparse.REMAINDER)
    agent.set_defaults(func=_node_agent)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
