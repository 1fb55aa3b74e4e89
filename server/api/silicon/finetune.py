"""Silicon Studio's fine-tuning routes (its "Engine / Models API" document, "Fine-Tuning"): start a LoRA job, its status,
the list of jobs and a cancel (ours), the adapters, and export.

The work is in server/finetune (jobs.py); these resources only read bodies and answer.
"""
from __future__ import annotations

from typing import Literal, Optional

import falcon
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelyard.server.api.silicon.engine import model_entry
from modelyard.server.finetune.errors import FinetuneError
from modelyard.server.finetune.jobs import Jobs, Request
from modelyard.server.http.bodies import read_model
from modelyard.server.http.errors import ApiError
from modelyard.server.registry import allowed
from modelyard.server.registry.store import Store
from modelyard.server.settings import Settings
from modelyard.server.shared.facts import ADAPTER_KIND, id_problem


RESPOND_ASYNC = "respond-async"


class SiliconFinetuneBody(BaseModel):
    """POST /api/engine/finetune, with the document's ranges."""

    model_config = ConfigDict(extra="ignore")

    model_id: str = Field(min_length=1, description="The base model: an llm GGUF of the llama family.")
    dataset_path: str = Field(min_length=1, description="An absolute path to a JSONL file inside an allowed "
                              "folder: lines of `messages`, `prompt`/`completion`, or `text`.")
    job_name: Optional[str] = Field(None, description="The job's name, and the adapter's model id.")
    epochs: int = Field(3, ge=1, le=100)
    learning_rate: float = Field(1e-4, gt=0, le=1)
    batch_size: int = Field(1, ge=1, le=64)
    lora_rank: int = Field(8, ge=1, le=256)
    lora_alpha: float = Field(16.0, gt=0, le=4096)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_layers: int = Field(8, ge=1, le=128, description="LoRA on this many of the last layers.")
    max_seq_length: int = Field(512, ge=64, le=32768)
    seed: Optional[int] = Field(None, ge=0, lt=2**31, description="The same seed gives the same adapter; "
                                "a random one (shown in the job's params) when absent.")

    @field_validator("job_name")
    @classmethod
    def _job_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (problem := id_problem(value)):
            raise ValueError(f"it names the adapter's model id, which {problem}")
        return value


class SiliconExportBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_id: str = Field(min_length=1, description="The adapter to merge into its base.")
    output_path: str = Field(min_length=1, description="A folder (the file is named after the adapter and "
                             "the type) or a .gguf path, inside an allowed folder.")
    q_bits: Literal[0, 2, 3, 4, 6, 8] = Field(4, description="0 = F16; 2, 3, 4, 6, 8 = Q2_K, Q3_K_M, "
                                              "Q4_K_M, Q6_K, Q8_0 (llama.cpp's quantizer).")


class _Resource:
    def __init__(self, jobs: Jobs, store: Store, settings: Settings, folders: allowed.AllowedFolders):
        self.jobs, self.store, self.settings, self.folders = jobs, store, settings, folders


class Finetune(_Resource):
    def on_post(self, req, resp):
        body = read_model(req, SiliconFinetuneBody, self.settings.max_body_size)
        fields = body.model_dump()
        fields["dataset_path"] = str(self.folders.check(body.dataset_path, "dataset path"))
        job = self.jobs.submit(Request(**fields))
        resp.status = falcon.HTTP_202
        resp.media = {"job_id": job["id"], **job}


class JobList(_Resource):
    def on_get(self, req, resp):
        resp.media = self.jobs.list()


class Job(_Resource):
    def on_get(self, req, resp, job_id):
        job = self.jobs.get(job_id)
        resp.media = {"job_id": job["id"], **job}


class Cancel(_Resource):
    def on_post(self, req, resp, job_id):
        job = self.jobs.cancel(job_id)
        resp.media = {"job_id": job["id"], **job}


class Adapters(_Resource):
    def on_get(self, req, resp):
        out = []
        for view in self.store.list(kind=ADAPTER_KIND):
            record = self.store.meta(view["id"])
            adapter = record.get("adapter") or {}
            out.append({**model_entry(view, record, None, False), "base_model_id": adapter.get("base"),
                        "lora_rank": adapter.get("rank"), "lora_alpha": adapter.get("alpha"),
                        "job_id": adapter.get("job_id")})
        resp.media = out


class Export(_Resource):
    """An export job. Silicon Studio's client awaits this call for the finished file (its
    backend answers `{"status", "path"}` when the merge is done), so by default the answer
    comes when the job ends; `Prefer: respond-async` (RFC 7240) answers 202 with the job at
    once. Either way the work is a job: listed, cancellable, and it goes on if the client leaves."""

    def on_post(self, req, resp):
        body = read_model(req, SiliconExportBody, self.settings.max_body_size)
        job = self.jobs.submit_export(body.model_id, self.folders.check(body.output_path, "output path"),
                                      body.q_bits)
        if RESPOND_ASYNC in (req.get_header("Prefer") or "").lower():
            resp.status = falcon.HTTP_202
            resp.set_header("Preference-Applied", RESPOND_ASYNC)
            resp.location = f"/api/engine/jobs/{job['id']}"
            resp.media = {"job_id": job["id"], **job}
            return
        job = self.jobs.wait(job["id"])
        if job["status"] != "completed":
            code = 409 if job["status"] == "cancelled" else 422
            raise ApiError(code, f"The export job '{job['id']}' ended {job['status']}: {job['error']}")
        resp.media = {"status": "exported", "job_id": job["id"], "model_id": job["output_model_id"],
                      "path": job["output_path"], "q_bits": job["q_bits"],
                      "model": self.store.get(job["output_model_id"])}


def finetune_error(req, resp, exc: FinetuneError, params):
    raise ApiError(exc.code, str(exc))


def resources(store: Store, settings: Settings) -> dict:
    """The fine-tuning resources by route below /api/engine (silicon/family.py declares the
    routes; FinetuneError's handler is declared there too)."""
    jobs = Jobs(store, settings.threads)
    folders = allowed.for_settings(settings)
    routes = {"/finetune": Finetune, "/jobs": JobList, "/jobs/{job_id}": Job, "/jobs/{job_id}/cancel": Cancel,
              "/models/adapters": Adapters, "/models/export": Export}
    return {path: resource(jobs, store, settings, folders) for path, resource in routes.items()}
