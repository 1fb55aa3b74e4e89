"""One training run as the server hands it to the trainer child (a JSON file), and the step
count it will take: pure, so the server's side never imports the trainer."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields


@dataclass(kw_only=True)
class HyperParameters:
    """Silicon Studio's fine-tuning fields, with its defaults (the API checks the ranges)."""

    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_layers: int = 8
    max_seq_length: int = 512
    seed: int | None = None  # the job picks one when absent, and records it


HYPERPARAMETERS = tuple(f.name for f in fields(HyperParameters))


@dataclass(kw_only=True)
class Spec(HyperParameters):
    """One training run: the job's hyper-parameters, resolved to files and threads."""

    base: str  # the base model's GGUF file
    dataset: str
    output: str  # where the adapter's GGUF goes
    threads: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def total_steps(n_examples: int, batch_size: int, epochs: int) -> int:
    return math.ceil(n_examples / batch_size) * epochs
