"""`modelyard operator`: run the kopf operator that turns Models into Jobs, Deployments and Services."""
from __future__ import annotations

import argparse
import logging

import kopf

from .handlers import build_registry
from .settings import OperatorSettings


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="modelyard operator",
        description="Watch Model resources and run their download Jobs and inference pods.",
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("-n", "--namespace", action="append", dest="namespaces", metavar="NS",
                       help="watch this namespace (repeatable; globs such as 'team-*' work)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", metavar="URL",
                        help="where to serve the liveness endpoint (default: %(default)s; '' disables it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    """Run until SIGTERM/SIGINT. KUBECONFIG or the in-cluster configuration says where the API is."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    settings = OperatorSettings.from_env()
    kopf.run(
        registry=build_registry(settings),
        # One replica (the chart uses the Recreate strategy): no peering objects needed.
        standalone=True,
        clusterwide=bool(args.all_namespaces),
        namespaces=args.namespaces or (),
        liveness_endpoint=args.liveness or None,
    )
    return 0
