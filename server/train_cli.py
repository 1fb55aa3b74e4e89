"""`modelyard train`: one LoRA fine-tuning run on a model of a store, in the foreground. A
FineTune's Job runs this in the trainer image (the finetune extra) on its base Model's cache.

It is the server's fine-tuning job (server/finetune/jobs.py) without the server: the same
checks before anything starts, the same trainer child process, and the adapter committed
into the store as a model of kind adapter, ready only once whole. It prints one JSON line
per step, `{"step", "totalSteps", "epoch", "loss"}`, then `{"done": true, "adapter": ID}` or
`{"error": {"message": ...}}` (the operator reads the tail of this log into the FineTune's
status). A dataset given as an http(s) URL is downloaded first under the egress policy.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from modelyard.server.finetune.dataset import MAX_DATASET_BYTES
from modelyard.server.finetune.errors import FinetuneError
from modelyard.server.finetune.jobs import FINISHED, Jobs, Request
from modelyard.server.registry import egress
from modelyard.server.registry.diskio import atomic_write
from modelyard.server.registry.errors import FetchError, StoreError
from modelyard.server.registry.store import Store
from modelyard.server.shared.finetuning import RANGES

EXIT_FAILED = 1
POLL = 0.5  # seconds between two reads of the job's record


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelyard train",
        description="Train a LoRA adapter on a model of a store and register it there as a model "
        "of kind adapter (the server's fine-tuning job, in the foreground).")
    p.add_argument("--store", required=True, help="model store directory (a Model's cache volume)")
    p.add_argument("--base", required=True, help="the base model's id: an llm GGUF of the llama family")
    p.add_argument("--adapter", required=True, help="the adapter's model id")
    p.add_argument("--dataset", required=True,
                   help="a JSONL file (messages, prompt/completion or text lines), or an http(s) URL of one")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="CPU threads of the trainer (default: the CPUs this process may use)")
    p.add_argument("--allow-fetch", action="append", default=None,
                   help="hosts or CIDR ranges a dataset URL may reach besides public addresses "
                   f"(repeatable; default: {egress.VARIABLE}, comma-separated)")
    for r in RANGES:
        p.add_argument(f"--{r.name.replace('_', '-')}", type=r.type, default=None,
                       help=f"{r.description} ({r.bounds()}; default {r.default})")
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # A deleted Job gets SIGTERM: stop the trainer child like Ctrl-C does.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    problems = [f"--{r.name.replace('_', '-')} {p}" for r in RANGES
                if getattr(args, r.name) is not None and (p := r.problem(getattr(args, r.name)))]
    if problems:
        return _error("; ".join(problems))
    jobs = job_id = None
    try:
        egress.configure(args.allow_fetch if args.allow_fetch is not None
                         else [os.environ.get(egress.VARIABLE, "")])
        store = Store(args.store)
        dataset = args.dataset
        if dataset.startswith(("http://", "https://")):
            dataset = str(download_dataset(dataset, store.root / "finetune" / "datasets" / f"{args.adapter}.jsonl"))
        params = {r.name: getattr(args, r.name) for r in RANGES if getattr(args, r.name) is not None}
        jobs = Jobs(store, max(1, args.threads))
        job_id = jobs.submit(Request(model_id=args.base, dataset_path=dataset, job_name=args.adapter,
                                     **params))["id"]
        record = follow(jobs, job_id)
    except KeyboardInterrupt:
        if jobs is not None and job_id is not None:
            _cancel(jobs, job_id)
        return _error("Interrupted; the adapter was not registered")
    except (FinetuneError, StoreError, FetchError, ValueError, OSError) as exc:
        return _error(str(exc) or type(exc).__name__)
    if record["status"] != "completed":
        return _error(record.get("error") or record["status"])
    _line({"done": True, "adapter": record["adapter_id"], "step": record["step"],
           "totalSteps": record["total_steps"], "loss": record["loss"]})
    return 0


def follow(jobs: Jobs, job_id: str) -> dict:
    """Print a line per step until the job ends; its final record."""
    printed = -1
    while True:
        record = jobs.get(job_id)
        if record["step"] and record["step"] != printed and record["status"] == "running":
            printed = record["step"]
            _line({"step": record["step"], "totalSteps": record["total_steps"], "epoch": record["epoch"],
                   "loss": record["loss"]})
        if record["status"] in FINISHED:
            return record
        time.sleep(POLL)


def download_dataset(url: str, target: Path) -> Path:
    """The dataset at `url`, through the egress policy, at most the datasets' size limit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray()
    with egress.client(follow_redirects=True, timeout=60) as client, client.stream("GET", url) as resp:
        if resp.status_code != 200:
            raise ValueError(f"The dataset URL answered HTTP {resp.status_code}: {egress.describe(resp)}")
        for chunk in resp.iter_bytes():
            data += chunk
            if len(data) > MAX_DATASET_BYTES:
                raise ValueError(f"The dataset at the URL is larger than {MAX_DATASET_BYTES} bytes")
    atomic_write(target, bytes(data))
    return target


def _cancel(jobs: Jobs, job_id: str) -> None:
    try:
        jobs.cancel(job_id)
    except FinetuneError:
        return
    deadline = time.monotonic() + 10
    while jobs.get(job_id)["status"] not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.1)


def _line(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _error(message: str) -> int:
    _line({"error": {"message": message}})
    print(f"modelyard train: error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
