"""Fine-tuning jobs: checked when asked for, queued, run one at a time in a trainer child
process, and their finished adapters registered in the store.

Each job's record is a JSON file, `<store>/finetune/jobs/<id>.json`, written atomically on
every change of state (and at most once a second while steps come in), so the list survives
a restart. A job that was running when the server died is `failed` with that reason when the
server starts again; its half-written output is removed and its adapter was never registered
(registration is the store's commit, the last thing a job does). Queued jobs run again.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from modelyard.server.finetune import dataset, lora_gguf
from modelyard.server.finetune.errors import FinetuneError, JobConflict, UnknownJob
from modelyard.server.finetune.spec import HYPERPARAMETERS, HyperParameters, Spec, total_steps
from modelyard.server.registry import formats
from modelyard.server.registry.diskio import atomic_write
from modelyard.server.registry.errors import ModelNotFound, StoreError
from modelyard.server.registry.store import Store, check_id
from modelyard.server.shared.facts import ADAPTER_KIND

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
SAVE_EVERY = 1.0  # seconds between progress writes of a running job's record
TRAINER_MODULES = ("torch", "transformers", "peft")


class NotInstalled(FinetuneError):
    code = 501


@dataclass(kw_only=True)
class Request(HyperParameters):
    """What POST /api/engine/finetune asks for (ranges are checked by the API's schema)."""

    model_id: str
    dataset_path: str
    job_name: str | None = None


def check_installed() -> None:
    missing = [m for m in TRAINER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise NotInstalled(f"Fine-tuning needs {', '.join(missing)}: install the server with its "
                           f"finetune extra (pip install 'modelyard[finetune]')")


def adapter_id_for(request: Request, job_id: str) -> str:
    return request.job_name or f"{request.model_id}-lora-{job_id[:8]}"


def eta_seconds(record: dict, now: float) -> float | None:
    """Time left at the pace of the steps so far."""
    if record["status"] != "running" or not record["step"] or not record.get("started_at"):
        return None
    per_step = (now - record["started_at"]) / record["step"]
    return round(per_step * (record["total_steps"] - record["step"]), 1)


class Jobs:
    """The jobs of one store. Thread-safe; one trainer runs at a time, the rest queue."""

    def __init__(self, store: Store, threads: int, python: str = sys.executable):
        self.store = store
        self.threads = threads
        self.python = python
        self.jobs_dir = store.root / "finetune" / "jobs"
        self.work_dir = store.root / "finetune" / "work"
        self._lock = threading.Condition()
        self._records: dict[str, dict] = {}
        self._queue: deque[str] = deque()
        self._cancels: dict[str, threading.Event] = {}
        self._worker: threading.Thread | None = None
        self._load()

    # ---- reads -----------------------------------------------------------------------

    def get(self, job_id: str) -> dict:
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                raise UnknownJob(job_id)
            return self._view(record)

    def list(self) -> list[dict]:
        with self._lock:
            return [self._view(r) for r in sorted(self._records.values(), key=lambda r: r["created_at"])]

    def _view(self, record: dict) -> dict:
        view = json.loads(json.dumps(record))
        view["eta_seconds"] = eta_seconds(record, time.time())
        view["progress"] = round(record["step"] / record["total_steps"], 4) if record["total_steps"] else 0.0
        return view

    def pending_adapters(self) -> set[str]:
        with self._lock:
            return {r["adapter_id"] for r in self._records.values() if r["status"] in ("queued", "running")}

    # ---- submit and cancel -------------------------------------------------------------

    def submit(self, request: Request) -> dict:
        """Check everything a job could be refused for, then queue it. Raises FinetuneError
        and StoreError subclasses (4xx) before anything is queued."""
        self.store.check_writable()
        base = self._check_base(request.model_id)
        examples = dataset.read(Path(request.dataset_path))
        check_installed()  # after the request's own faults: those are the client's to fix first
        job_id = secrets.token_hex(8)
        adapter_id = adapter_id_for(request, job_id)
        check_id(adapter_id)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        params = {k: getattr(request, k) for k in HYPERPARAMETERS} | {"seed": seed}
        now = time.time()
        record = {
            "id": job_id, "job_name": request.job_name or adapter_id, "model_id": request.model_id,
            "adapter_id": adapter_id, "dataset_path": request.dataset_path, "examples": len(examples),
            "status": "queued", "created_at": now, "started_at": None, "finished_at": None,
            "step": 0, "total_steps": total_steps(len(examples), request.batch_size, request.epochs),
            "epoch": 0, "epochs": request.epochs, "loss": None, "loss_history": [],
            "tokens_per_second": None, "error": None, "params": params,
            "base_sha256": base.get("sha256"),
        }
        with self._lock:
            if adapter_id in self.pending_adapters() or self._exists(adapter_id):
                raise JobConflict(f"Model '{adapter_id}' exists or another job makes it: choose "
                                  f"another job_name")
            self._records[job_id] = record
            self._save(record)
            self._queue.append(job_id)
            self._start_worker()
            self._lock.notify_all()
            return self._view(record)

    def cancel(self, job_id: str) -> dict:
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                raise UnknownJob(job_id)
            if record["status"] in FINISHED:
                raise JobConflict(f"Job '{job_id}' is {record['status']} already")
            if record["status"] == "queued":
                self._queue.remove(job_id)
                self._finish(record, "cancelled", "Cancelled before it started")
            else:
                self._cancels[job_id].set()
            return self._view(record)

    def _check_base(self, model_id: str) -> dict:
        base = self.store.get(model_id)
        if base["kind"] != "llm":
            raise FinetuneError(f"Model '{model_id}' is a {base['kind']} model; LoRA fine-tuning "
                                f"takes an llm GGUF model")
        if not base["readyToUse"]:
            raise FinetuneError(f"Model '{model_id}' has no complete file yet")
        arch = formats.gguf_metadata(self.store.file_path(model_id)).get("general.architecture")
        if arch not in lora_gguf.ARCHITECTURES:
            raise FinetuneError(f"Model '{model_id}' is a '{arch}' model; the trainer takes "
                                f"{', '.join(lora_gguf.ARCHITECTURES)} models")
        return base

    def _exists(self, model_id: str) -> bool:
        try:
            self.store.get(model_id)
            return True
        except ModelNotFound:
            return False

    # ---- the worker ------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="finetune-jobs", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._worker = None
                    return
                job_id = self._queue.popleft()
                record = self._records[job_id]
                cancel = self._cancels[job_id] = threading.Event()
                record.update(status="running", started_at=time.time())
                self._save(record)
            try:
                self._run(record, cancel)
            except Exception as exc:  # a job's failure is its record's, never the server's
                if not isinstance(exc, (FinetuneError, StoreError)):
                    log.exception("fine-tuning job %s failed", job_id)
                with self._lock:
                    self._finish(record, "cancelled" if cancel.is_set() else "failed",
                                 "Cancelled" if cancel.is_set() else str(exc) or type(exc).__name__)
            finally:
                with self._lock:
                    self._cancels.pop(job_id, None)
                shutil.rmtree(self.work_dir / job_id, ignore_errors=True)

    def _run(self, record: dict, cancel: threading.Event) -> None:
        work = self.work_dir / record["id"]
        work.mkdir(parents=True, exist_ok=True)
        output = work / "adapter.gguf"
        spec = Spec(base=str(self.store.file_path(record["model_id"])), dataset=record["dataset_path"],
                    output=str(output), threads=self.threads, **record["params"])
        (work / "spec.json").write_text(spec.to_json())
        self._train(record, work, cancel)
        if not output.is_file():
            raise FinetuneError("The trainer ended without writing the adapter")
        self._register(record, output)
        with self._lock:
            self._finish(record, "completed", None)

    def _train(self, record: dict, work: Path, cancel: threading.Event) -> None:
        env = {**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": str(self.threads),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(work / "trainer.log", "wb") as errors:
            child = subprocess.Popen(
                [self.python, "-m", "modelyard.server.finetune.trainer", str(work / "spec.json")],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env)
            watcher = threading.Thread(target=_kill_on, args=(cancel, child), daemon=True)
            watcher.start()
            try:
                self._follow(record, child.stdout)
            finally:
                child.stdout.close()
                child.wait()
                watcher.join()
        if cancel.is_set():
            raise FinetuneError("Cancelled")
        if child.returncode != 0:
            tail = (work / "trainer.log").read_text("utf-8", "replace").strip().splitlines()[-3:]
            raise FinetuneError(f"The trainer failed (exit {child.returncode}): {' | '.join(tail)}")

    def _follow(self, record: dict, stdout) -> None:
        saved = 0.0
        for line in stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if event.get("event") == "start":
                    record["total_steps"] = event["total_steps"]
                elif event.get("event") == "step":
                    record.update(step=event["step"], epoch=event["epoch"], loss=event["loss"],
                                  tokens_per_second=round(event["tokens_per_second"], 1))
                    record["loss_history"].append({"step": event["step"], "loss": event["loss"]})
                now = time.monotonic()
                if now - saved >= SAVE_EVERY:
                    self._save(record)
                    saved = now

    def _register(self, record: dict, output: Path) -> None:
        """The adapter becomes a model: its file committed as any model's is, so it is ready
        only once whole and verified."""
        params = record["params"]
        fields = {"id": record["adapter_id"], "kind": ADAPTER_KIND, "is_finetuned": True,
                  "adapter": {"base": record["model_id"], "rank": params["lora_rank"],
                              "alpha": params["lora_alpha"], "job_id": record["id"]}}
        with self.store.provisional(fields, new={"version": ""}):
            with self.store.transfer(record["adapter_id"]) as transfer:
                transfer.place("model", output)
                transfer.commit()

    # ---- records ---------------------------------------------------------------------

    def _finish(self, record: dict, status: str, error: str | None) -> None:
        record.update(status=status, error=error, finished_at=time.time())
        self._save(record)

    def _save(self, record: dict) -> None:
        if self.store.read_only:
            return
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.jobs_dir / f"{record['id']}.json", json.dumps(record, indent=1).encode())

    def _load(self) -> None:
        """Read the records; a job that was running is failed (its trainer died with the
        server), its leftovers removed; queued jobs queue again."""
        if not self.jobs_dir.is_dir():
            return
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            self._records[record["id"]] = record
            if record["status"] == "running":
                self._abandoned(record)
        queued = sorted((r for r in self._records.values() if r["status"] == "queued"),
                        key=lambda r: r["created_at"])
        self._queue.extend(r["id"] for r in queued)
        if self._queue:
            self._start_worker()

    def _abandoned(self, record: dict) -> None:
        shutil.rmtree(self.work_dir / record["id"], ignore_errors=True)
        try:  # a registration the crash cut short: never ready, and removed
            if not self.store.get(record["adapter_id"])["readyToUse"]:
                self.store.delete(record["adapter_id"])
        except (StoreError, OSError):
            pass
        self._finish(record, "failed", "The server stopped while this job was running; start it again")


def _kill_on(cancel: threading.Event, child: subprocess.Popen) -> None:
    while child.poll() is None:
        if cancel.wait(0.2):
            child.kill()
            return
