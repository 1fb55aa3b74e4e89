"""`modelyard fetch`: download a model into a store. The operator's download Job runs this.

On a terminal it draws progress bars; otherwise it prints one JSON line per event, in
the shapes of the registry's SSE events, ending with `{"done": true, ...}` or
`{"error": {...}}`. A failed or killed run keeps its partial files, so the next run
resumes where this one stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading

from modelyard.server.registry import adapter_sources, egress, fetch
from modelyard.server.registry import store as st
from modelyard.server.shared import facts

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelyard fetch",
        description="Download a model file (and a vlm's projector) into a model store, "
        "verify it and mark the model ready. Re-running resumes an interrupted download.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="http(s) URL, a Hugging Face resolve URL, or hf://<org>/<repo>/<file>")
    p.add_argument("--store", required=True, help="model store directory")
    p.add_argument("--id", required=True, dest="model_id", help="model id in the store")
    p.add_argument("--kind", choices=facts.KINDS,
                   help="model kind; required when the model does not exist yet")
    p.add_argument("--mmproj", metavar="SOURCE", help="a vlm's projector file, same forms as SOURCE")
    p.add_argument("--sha256", type=_sha256, help="expected sha256 of the main file (hex)")
    p.add_argument("--revision", help="branch, tag or commit for hf:// sources (default main)")
    p.add_argument("--version", help="version recorded when the model is created (default 1.0.0)")
    p.add_argument("--adapter", action="append", default=[], type=_adapter,
                   metavar="JSON", help='a LoRA adapter of the model, fetched after it and registered as a '
                   'model of kind adapter: {"name", "source" (hf:// or http(s), optional "revision")} or '
                   '{"name", "path" (relative to --store)}. Repeatable; adapters that an earlier run '
                   'fetched and the list no longer names are removed')
    p.add_argument("--adapters-only", action="store_true",
                   help="the model is already complete in the store from SOURCE: fetch, check and sync only "
                   "the --adapter list against it, and fail (without downloading) when it is not. The "
                   "operator's Job for a change of spec.adapters alone, while the pods serve the model")
    p.add_argument("--allow-fetch", action="append", default=None,
                   help="hosts or address ranges (CIDR) the download may reach besides public "
                   f"addresses (repeatable; default: {egress.VARIABLE}, comma-separated)")
    return p


def _adapter(text: str) -> adapter_sources.Wanted:
    try:
        return adapter_sources.Wanted.parse(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's words, not a ValueError's
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError("must be 64 hexadecimal characters")
    return text.lower()


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    out = TtyOutput() if sys.stderr.isatty() else JsonOutput()
    if threading.current_thread() is threading.main_thread():
        # A deleted Job gets SIGTERM: unwind like Ctrl-C, so the partial is kept cleanly.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        allow = args.allow_fetch if args.allow_fetch is not None else [os.environ.get(egress.VARIABLE, "")]
        egress.configure(allow)
        sources = fetch.plan_sources(args.source, args.mmproj, args.revision,
                                     labels=("SOURCE", "--mmproj"))
        store = st.Store(args.store)
        model = _complete_model(store, sources, args) if args.adapters_only else _ensure_model(store, args)
        if _already_done(store, model, sources, args):
            adapter_sources.sync(store, args.model_id, args.adapter, out.progress)
            out.done(model)
            return 0
        projector = model["kind"] == "vlm" and store.file_path(args.model_id, "mmproj").exists()
        problem = facts.vlm_problem(args.model_id, model["kind"], "mmproj" in sources,
                                    projector, field="--mmproj")
        if problem:
            raise ValueError(problem)
        with store.transfer(args.model_id) as transfer:
            # Taking the transfer finishes a commit that a killed run had decided: then
            # there may be nothing left to download.
            model = store.get(args.model_id)
            if not _already_done(store, model, sources, args):
                model = fetch.download_into(transfer, sources, sha256=args.sha256,
                                            on_progress=out.progress, keep_partial=True)
        adapter_sources.sync(store, args.model_id, args.adapter, out.progress)
    except KeyboardInterrupt:
        out.error({"error": {"code": 499, "message": "Interrupted; a re-run resumes the download"}})
        return EXIT_INTERRUPTED
    except adapter_sources.AdapterFailed as exc:  # the message names the adapter
        out.error({"error": {**_error_event(exc.cause)["error"], "message": str(exc)}})
        return EXIT_FAILED
    except Exception as exc:
        out.error(_error_event(exc))
        return EXIT_FAILED
    out.done(model)
    return 0


def _error_event(exc: Exception) -> dict:
    if isinstance(exc, ValueError):  # a usage problem found after parsing the flags
        return {"error": {"code": 400, "message": str(exc)}}
    return fetch.error_event(exc)


def _complete_model(store: st.Store, sources: dict, args) -> dict:
    """--adapters-only: the model, which must be ready from the same sources."""
    try:
        model = store.get(args.model_id)
    except st.ModelNotFound:
        model = None
    if model is None or not _already_done(store, model, sources, args):
        raise ValueError(f"--adapters-only: model '{args.model_id}' is not complete in the store from "
                         f"{args.source}; run without --adapters-only to download it")
    return model


def _ensure_model(store: st.Store, args) -> dict:
    """The model's metadata, created when absent; its kind must match --kind."""
    try:
        model = store.get(args.model_id)
    except st.ModelNotFound:
        if not args.kind:
            raise ValueError(f"Model '{args.model_id}' does not exist yet: give --kind "
                             f"({', '.join(facts.KINDS)}) to create it") from None
        model, _ = store.create({"id": args.model_id, "version": args.version or "1.0.0",
                                 "kind": args.kind})
        return model
    if args.kind and model["kind"] != args.kind:
        raise ValueError(f"Model '{args.model_id}' exists with kind '{model['kind']}', "
                         f"not '{args.kind}'")
    return model


def _already_done(store: st.Store, model: dict, sources: dict, args) -> bool:
    """Ready with the same files from the same sources: a Job re-run has nothing to do."""
    if not model["readyToUse"] or (args.sha256 and model.get("sha256") != args.sha256):
        return False
    return all(store.committed_source(model["id"], role) == source.identity
               for role, source in sources.items())


class JsonOutput:
    """One JSON line per event on stdout, for the operator's Job logs."""

    def progress(self, event: dict) -> None:
        self._line(event)

    def done(self, model: dict) -> None:
        self._line({"done": True, "model": model})

    def error(self, event: dict) -> None:
        self._line(event)
        print(f"modelyard fetch: error: {event['error']['message']}", file=sys.stderr, flush=True)

    @staticmethod
    def _line(event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


class TtyOutput:
    """tqdm bars on the terminal, one per file."""

    def __init__(self):
        self.bars: dict = {}

    def progress(self, event: dict) -> None:
        role, sizes = ("mmproj", event["mmproj"]) if "mmproj" in event else \
            (event["adapter"]["name"], event["adapter"]) if "adapter" in event else ("model", event)
        bar = self.bars.get(role)
        if bar is None:
            from tqdm import tqdm

            bar = self.bars[role] = tqdm(total=sizes.get("totalSize"), desc=role, unit="B",
                                         unit_scale=True, unit_divisor=1024, file=sys.stderr)
        if sizes.get("totalSize") is not None:
            bar.total = sizes["totalSize"]
        bar.update(sizes["size"] - bar.n)

    def done(self, model: dict) -> None:
        self._close()
        print(f"modelyard fetch: model '{model['id']}' is ready "
              f"({model.get('totalSize')} bytes, sha256 {model.get('sha256')})", file=sys.stderr)

    def error(self, event: dict) -> None:
        self._close()
        print(f"modelyard fetch: error: {event['error']['message']}", file=sys.stderr)

    def _close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
