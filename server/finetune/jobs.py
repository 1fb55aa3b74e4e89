"""Fine-tuning's jobs, of two types: `finetune` (a LoRA trained in a trainer child process,
the adapter registered in the store) and `export` (an adapter merged into its base and
quantized in an export child process, the file registered where it was written). Each is
checked when asked for, queued, and run in a child; one job of each type runs at a time
(an export does not wait for a long training).

Each job's record is a JSON file, `<store>/finetune/jobs/<id>.json`, written atomically on
every change of state (and at most once a second while progress comes in), so the list
survives a restart. A job that was running when the server died is `failed` with that reason
when the server starts again; its half-written output is removed and its result was never
registered (registration is the last thing a job does). Queued jobs run again.
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

from modelyard.server.finetune import dataset, export, lora_gguf
from modelyard.server.finetune.errors import FinetuneError, JobConflict, UnknownJob
from modelyard.server.finetune.spec import HYPERPARAMETERS, HyperParameters, Spec, total_steps
from modelyard.server.registry import formats, registered
from modelyard.server.registry.diskio import atomic_write
from modelyard.server.registry.errors import ModelNotFound, StoreError
from modelyard.server.registry.store import Store, check_id
from modelyard.server.shared.facts import ADAPTER_KIND

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
TYPES = ("finetune", "export")
SAVE_EVERY = 1.0  # seconds between progress writes of a running job's record
GRACE = 5.0  # seconds a cancelled child has to clean up (the export's quantizer) before SIGKILL
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


def progress(record: dict) -> float:
    """0 to 1: a training's steps done; an export's own measure (its stages' work done)."""
    if record.get("type") == "export":
        return record["progress"]
    return round(record["step"] / record["total_steps"], 4) if record["total_steps"] else 0.0


def eta_seconds(record: dict, now: float) -> float | None:
    """Time left at the pace of the work so far."""
    done = progress(record)
    if record["status"] != "running" or not done or not record.get("started_at"):
        return None
    return round((now - record["started_at"]) / done * (1 - done), 1)


class Jobs:
    """The jobs of one store. Thread-safe; one trainer runs at a time, the rest queue."""

    def __init__(self, store: Store, threads: int, python: str = sys.executable):
        self.store = store
        self.threads = threads
        self.python = python
        self.jobs_dir = store.root / "finetune" / "jobs"
        self.work_dir = store.root / "finetune" / "work"
        self._lock = threading.Condition()  # an RLock inside: _finish notifies from nested calls
        self._records: dict[str, dict] = {}
        self._queues: dict[str, deque[str]] = {t: deque() for t in TYPES}
        self._cancels: dict[str, threading.Event] = {}
        self._workers: dict[str, threading.Thread] = {}
        with self._lock:
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
        view.setdefault("type", "finetune")  # records written before exports were jobs
        view["eta_seconds"] = eta_seconds(record, time.time())
        view["progress"] = progress(record)
        return view

    def wait(self, job_id: str) -> dict:
        """The job's view once it has finished (the export route's answer for clients that
        wait for the file, as Silicon Studio's do)."""
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                raise UnknownJob(job_id)
            self._lock.wait_for(lambda: record["status"] in FINISHED)
            return self._view(record)

    def _pending(self, key: str) -> set[str]:
        """`key` of the jobs queued or running (the models they will register)."""
        return {r[key] for r in self._records.values() if r["status"] in ("queued", "running") and key in r}

    def pending_adapters(self) -> set[str]:
        with self._lock:
            return self._pending("adapter_id")

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
            "id": job_id, "type": "finetune", "job_name": request.job_name or adapter_id,
            "model_id": request.model_id,
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
            return self._enqueue(record)

    def submit_export(self, adapter_id: str, output: Path, q_bits: int) -> dict:
        """Check an export (the adapter, its base, the target file and the model id it will
        have), then queue it. `output` is a folder or a .gguf path, inside an allowed folder."""
        self.store.check_writable()
        meta = self.store.meta(adapter_id)
        if meta["kind"] != ADAPTER_KIND:
            raise FinetuneError(f"Model '{adapter_id}' is not an adapter: export merges a fine-tuned "
                                "adapter into its base")
        base = meta["adapter"]["base"]
        if not self.store.get(base)["readyToUse"] or not self.store.get(adapter_id)["readyToUse"]:
            raise FinetuneError(f"Model '{base}' or '{adapter_id}' has no complete file yet")
        target = export.output_file(output, adapter_id, q_bits)
        model_id = registered.id_for(target)
        check_id(model_id)
        with self._lock:
            if str(target) in self._pending("output_path"):
                raise JobConflict(f"Another export writes '{target}'; export to another path")
            if model_id in self._pending("output_model_id") or self._exists(model_id):
                raise JobConflict(f"Model '{model_id}' exists or another export makes it; export under "
                                  f"another file name")
            return self._enqueue({
                "id": secrets.token_hex(8), "type": "export", "model_id": adapter_id, "base_model_id": base,
                "output_path": str(target), "q_bits": q_bits, "quantization": export.quant_name(q_bits).upper(),
                "output_model_id": model_id, "new_folder": not target.parent.exists(),
                "status": "queued", "stage": None, "progress": 0.0,
                "created_at": time.time(), "started_at": None, "finished_at": None, "error": None})

    def _enqueue(self, record: dict) -> dict:
        self._records[record["id"]] = record
        self._save(record)
        self._queues[record["type"]].append(record["id"])
        self._start_worker(record["type"])
        return self._view(record)

    def cancel(self, job_id: str) -> dict:
        with self._lock:
            record = self._records.get(job_id)
            if record is None:
                raise UnknownJob(job_id)
            if record["status"] in FINISHED:
                raise JobConflict(f"Job '{job_id}' is {record['status']} already")
            if record["status"] == "queued":
                self._queues[record.get("type", "finetune")].remove(job_id)
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

    def _start_worker(self, kind: str) -> None:
        worker = self._workers.get(kind)
        if worker is None or not worker.is_alive():
            worker = self._workers[kind] = threading.Thread(target=self._work, args=(kind,),
                                                            name=f"{kind}-jobs", daemon=True)
            worker.start()

    def _work(self, kind: str) -> None:
        while True:
            with self._lock:
                if not self._queues[kind]:
                    self._workers.pop(kind, None)
                    return
                job_id = self._queues[kind].popleft()
                record = self._records[job_id]
                cancel = self._cancels[job_id] = threading.Event()
                record.update(status="running", started_at=time.time())
                self._save(record)
            try:
                (self._run_export if kind == "export" else self._run)(record, cancel)
            except Exception as exc:  # a job's failure is its record's, never the server's
                if not isinstance(exc, (FinetuneError, StoreError)):
                    log.exception("%s job %s failed", kind, job_id)
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
        def on_event(event: dict) -> None:
            if event.get("event") == "start":
                record["total_steps"] = event["total_steps"]
            elif event.get("event") == "step":
                record.update(step=event["step"], epoch=event["epoch"], loss=event["loss"],
                              tokens_per_second=round(event["tokens_per_second"], 1))
                record["loss_history"].append({"step": event["step"], "loss": event["loss"]})

        self._child(record, "modelyard.server.finetune.trainer", work, cancel, on_event, "trainer")

    def _child(self, record: dict, module: str, work: Path, cancel: threading.Event, on_event,
               what: str) -> None:
        """Run `python -m module work/spec.json`, feeding its stdout's JSON lines to `on_event`
        (under the lock), until it ends; killed when `cancel` is set."""
        env = {**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": str(self.threads),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(work / "child.log", "wb") as errors:
            child = subprocess.Popen([self.python, "-m", module, str(work / "spec.json")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env)
            watcher = threading.Thread(target=_stop_on, args=(cancel, child), daemon=True)
            watcher.start()
            try:
                self._follow(record, child.stdout, on_event)
            finally:
                child.stdout.close()
                child.wait()
                watcher.join()
        if cancel.is_set():
            raise FinetuneError("Cancelled")
        if child.returncode != 0:
            tail = (work / "child.log").read_text("utf-8", "replace").strip().splitlines()[-3:]
            raise FinetuneError(f"The {what} failed (exit {child.returncode}): {' | '.join(tail)}")

    def _follow(self, record: dict, stdout, on_event) -> None:
        saved = 0.0
        for line in stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                on_event(event)
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

    def _run_export(self, record: dict, cancel: threading.Event) -> None:
        work = self.work_dir / record["id"]
        work.mkdir(parents=True, exist_ok=True)
        target = Path(record["output_path"])
        spec = {"base": str(self.store.file_path(record["base_model_id"])),
                "adapter": str(self.store.file_path(record["model_id"])), "target": str(target),
                "q_bits": record["q_bits"], "threads": self.threads}
        (work / "spec.json").write_text(json.dumps(spec))
        # The merge is the first half of a quantized export's work, the quantizer the second.
        share = {"merge": (0.0, 0.5), "quantize": (0.5, 0.5)} if record["q_bits"] else {"merge": (0.0, 1.0)}

        def on_event(event: dict) -> None:
            if event.get("event") in share and event.get("total"):
                start, width = share[event["event"]]
                record.update(stage=event["event"], progress=round(start + width * event["done"] / event["total"], 4))

        try:
            self._child(record, "modelyard.server.finetune.export", work, cancel, on_event, "export")
            if not target.is_file():
                raise FinetuneError("The export ended without writing its file")
            with self._lock:
                if cancel.is_set():
                    raise FinetuneError("Cancelled")
                record["stage"] = "register"
                self._save(record)
            self._register_export(record, target)
        except BaseException:
            self._remove_export(record)
            raise
        with self._lock:
            record["progress"] = 1.0
            self._finish(record, "completed", None)

    def _register_export(self, record: dict, target: Path) -> None:
        """The merged file becomes a model where it lies (checked and hashed as registering by
        path is), with its base's serving settings."""
        settings = self.store.meta(record["base_model_id"]).get("gguf")
        self.store.register_path(record["output_model_id"], target, kind="llm",
                                 fields={"gguf": settings} if settings else None)

    def _remove_export(self, record: dict) -> None:
        """What an export that did not complete wrote: its partials, its file when it was renamed
        into place but not registered (whole or not at all), the folder it made."""
        target = Path(record["output_path"])
        for path in export.leftovers(target):
            path.unlink(missing_ok=True)
        if self.store_file(record["output_model_id"]) != target and target.is_file() \
                and target.stat().st_mtime >= (record["started_at"] or 0):
            target.unlink()
        if record.get("new_folder"):
            try:
                target.parent.rmdir()
            except OSError:  # not empty, or not there
                pass

    def store_file(self, model_id: str) -> Path | None:
        """The file a ready model serves, or None."""
        try:
            return self.store.file_path(model_id) if self.store.get(model_id)["readyToUse"] else None
        except (StoreError, OSError):
            return None

    # ---- records ---------------------------------------------------------------------

    def _finish(self, record: dict, status: str, error: str | None) -> None:
        record.update(status=status, error=error, finished_at=time.time())
        self._save(record)
        self._lock.notify_all()  # wait()

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
        for record in queued:
            self._queues[record.get("type", "finetune")].append(record["id"])
        for kind, queue in self._queues.items():
            if queue:
                self._start_worker(kind)

    def _abandoned(self, record: dict) -> None:
        shutil.rmtree(self.work_dir / record["id"], ignore_errors=True)
        if record.get("type") == "export":
            self._remove_export(record)
        else:
            try:  # a registration the crash cut short: never ready, and removed
                if not self.store.get(record["adapter_id"])["readyToUse"]:
                    self.store.delete(record["adapter_id"])
            except (StoreError, OSError):
                pass
        self._finish(record, "failed", "The server stopped while this job was running; start it again")


def _stop_on(cancel: threading.Event, child: subprocess.Popen) -> None:
    """SIGTERM the child when `cancel` is set (the export's child then stops its quantizer and
    removes its partial files), SIGKILL it if it is still there GRACE seconds later."""
    while child.poll() is None:
        if cancel.wait(0.2):
            child.terminate()
            try:
                child.wait(GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
            return
