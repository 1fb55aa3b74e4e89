"""The `modelyard` command: serve, fetch, train, operator, router."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from modelyard.server.registry import egress
from modelyard.server.shared.facts import CHAT_TEMPLATE_HINTS, KV_CACHE_TYPES
from modelyard.server.settings import Settings


def _serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the registry and inference server",
        description="Serve the model registry and the inference APIs. "
        "Every flag also reads a MODELYARD_<NAME> environment variable.",
    )
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Settings)}
    p.add_argument("--host", help=f"{helps['host']} (default 127.0.0.1; MODELYARD_HOST)")
    p.add_argument("--port", type=int, help=f"{helps['port']} (default 8083; MODELYARD_PORT)")
    p.add_argument("--store", help=f"{helps['store']} (default: a per-user data dir; MODELYARD_STORE)")
    p.add_argument("--api-key", help=f"{helps['api_key']} (MODELYARD_API_KEY)")
    p.add_argument("--preload", action="append", help=f"{helps['preload']} (MODELYARD_PRELOAD)")
    p.add_argument("--cors-origin", action="append", dest="cors_origins",
                   help=f"{helps['cors_origins']} (MODELYARD_CORS_ORIGINS)")
    p.add_argument("--allow-fetch", action="append", dest="allow_fetch",
                   help=f"{helps['allow_fetch']} (MODELYARD_ALLOW_FETCH)")
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts",
                   help=f"{helps['allowed_hosts']} (MODELYARD_ALLOWED_HOSTS)")
    p.add_argument("--parallel", type=int, help=f"{helps['parallel']} (default 4; MODELYARD_PARALLEL)")
    p.add_argument("--threads", type=int, help=f"{helps['threads']} (default: all cores; MODELYARD_THREADS)")
    p.add_argument("--engine-hang-timeout", type=float,
                   help=f"{helps['engine_hang_timeout']} (default 300; MODELYARD_ENGINE_HANG_TIMEOUT)")
    p.add_argument("--keepalive-seconds", type=float,
                   help=f"{helps['keepalive_seconds']} (default 10; MODELYARD_KEEPALIVE_SECONDS)")
    p.add_argument("--http-threads", type=int, help=f"{helps['http_threads']} (MODELYARD_HTTP_THREADS)")
    p.add_argument("--max-body-size", type=int, help=f"{helps['max_body_size']} (MODELYARD_MAX_BODY_SIZE)")
    p.add_argument("--max-upload-size", type=int, help=f"{helps['max_upload_size']} (MODELYARD_MAX_UPLOAD_SIZE)")
    p.add_argument("--allow-path", action="append", dest="allowed_paths",
                   help=f"{helps['allowed_paths']} (MODELYARD_ALLOWED_PATHS)")
    p.add_argument("--init-context-size", type=int, help=f"{helps['init_context_size']} (MODELYARD_INIT_CONTEXT_SIZE)")
    p.add_argument("--init-gpu-layer-size", type=int, help=f"{helps['init_gpu_layer_size']} (MODELYARD_INIT_GPU_LAYER_SIZE)")
    p.add_argument("--chat-template-hint", help=f"{helps['chat_template_hint']} (MODELYARD_CHAT_TEMPLATE_HINT)")
    p.add_argument("--execution-provider", help=f"{helps['execution_provider']} (MODELYARD_EXECUTION_PROVIDER)")
    p.add_argument("--kv-cache-type", help=f"{helps['kv_cache_type']} (MODELYARD_KV_CACHE_TYPE)")


def _router_parser(sub) -> None:
    from modelyard.server.router.settings import RouterSettings

    p = sub.add_parser(
        "router",
        help="route every API to the cluster's Models (in a cluster, beside the operator)",
        description="One endpoint for every Model of the cluster: finds the model in each API's "
        "request, picks a ready pod, wakes Models at zero replicas. "
        "Every flag also reads a MODELYARD_<NAME> environment variable.",
    )
    for f in dataclasses.fields(RouterSettings):
        variable = f"MODELYARD_{f.name.upper()}"
        if f.name == "namespaces":
            p.add_argument("--namespace", action="append", dest="namespaces", help=f"{f.metadata['help']} ({variable})")
        elif f.default is False:
            p.add_argument("--" + f.name.replace("_", "-"), action="store_true", default=None,
                           help=f"{f.metadata['help']} ({variable})")
        else:
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default) if f.default != "" else str,
                           help=f"{f.metadata['help']} (default {f.default}; {variable})")


def router(args: argparse.Namespace) -> int:
    from modelyard.server.router.main import run as run_router
    from modelyard.server.router.settings import RouterSettings

    overrides = {k: v for k, v in vars(args).items() if k != "command"}
    return run_router(RouterSettings.from_env(**overrides))


def serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command",)}
    settings = Settings.from_env(**overrides)
    if settings.chat_template_hint and settings.chat_template_hint not in CHAT_TEMPLATE_HINTS:
        print(f"modelyard: unknown --chat-template-hint '{settings.chat_template_hint}'; "
              f"use one of: {', '.join(CHAT_TEMPLATE_HINTS)}", file=sys.stderr)
        return 2
    if settings.kv_cache_type and settings.kv_cache_type not in KV_CACHE_TYPES:
        print(f"modelyard: unknown --kv-cache-type '{settings.kv_cache_type}'; "
              f"use one of: {', '.join(KV_CACHE_TYPES)}", file=sys.stderr)
        return 2
    try:
        egress.Policy.parse(settings.allow_fetch)
    except ValueError as exc:
        print(f"modelyard: --allow-fetch: {exc}", file=sys.stderr)
        return 2
    if not settings.api_key and not settings.loopback_only():
        print(
            f"modelyard: refusing to serve on {settings.host} without an API key: anyone who can "
            "reach that address could change the store. Set --api-key or MODELYARD_API_KEY, "
            "or listen on 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    from modelyard.server.gunicorn_app import run_server

    return run_server(settings)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="modelyard",
        description="Serve GGUF and ONNX models: a model registry and OpenAI/KServe inference.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _router_parser(sub)
    sub.add_parser("fetch", help="download a model into a store (the operator's Job runs this)", add_help=False)
    sub.add_parser("train", help="train a LoRA adapter on a model of a store (a FineTune's Job runs this)",
                   add_help=False)
    sub.add_parser("operator", help="run the Kubernetes operator", add_help=False)
    # fetch, train and operator parse their own flags.
    if argv and argv[0] == "fetch":
        from modelyard.server.fetch_cli import run as run_fetch

        return run_fetch(argv[1:])
    if argv and argv[0] == "train":
        from modelyard.server.train_cli import run as run_train

        return run_train(argv[1:])
    if argv and argv[0] == "operator":
        from modelyard.operator.main import run as run_operator

        return run_operator(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "router":
        return router(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
