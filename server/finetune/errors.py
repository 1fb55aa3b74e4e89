"""Fine-tuning's failures, each with the HTTP status it reads as (api/silicon/finetune.py)."""
from __future__ import annotations


class FinetuneError(Exception):
    code = 400


class DatasetError(FinetuneError):
    """A dataset that does not exist, is empty, or has a bad line (named by its number)."""


class UnknownJob(FinetuneError):
    code = 404

    def __init__(self, job_id: str):
        super().__init__(f"Job '{job_id}' not found")


class JobConflict(FinetuneError):
    """An adapter id that is taken, a job that cannot be cancelled any more, a base in use."""

    code = 409
