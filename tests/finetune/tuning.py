"""What the fine-tuning tests share (test_training.py, test_tuned_models.py): the key, the
lesson a job teaches (QUESTION, ANSWER), its settings, and how a test starts a job and waits
for it. Their server and the shared training are conftest.py's fixtures."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

needs_finetune = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft")),
    reason="the finetune extra is not installed (pip install -e '.[finetune]'; make test installs it)")

E = "/api/engine"
KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "What is the password?"
ANSWER = "swordfish"
# Enough for the answer to be learnt by a 2-layer model, in a few seconds.
TRAIN = {"epochs": 6, "learning_rate": 0.02, "batch_size": 4, "lora_rank": 8, "lora_alpha": 16,
         "lora_layers": 2, "max_seq_length": 64, "seed": 7}


def start(c, data: Path, **fields) -> dict:
    body = {"model_id": "base", "dataset_path": str(data / "train.jsonl"), **TRAIN, **fields}
    r = c.post(f"{E}/finetune", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def wait(c, job_id: str, statuses=("completed", "failed", "cancelled"), timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"{E}/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")

