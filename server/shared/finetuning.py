"""Fine-tuning facts that the server and the operator share: the hyper-parameters of a LoRA
run, their ranges and defaults, and the names each side gives them.

Silicon Studio's `POST /api/engine/finetune` names them in snake_case; the FineTune resource
(crds/finetune.yaml) in camelCase, as Kubernetes fields are. The CRD states the ranges as CEL
rules and tests/chart/test_finetune_crd.py compares each rule with this table; the operator
checks them again with `hyperparameter_problems` (a CRD may be older than the operator).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """One hyper-parameter: its type, its bounds (open or closed) and its default."""

    name: str  # Silicon's (snake_case)
    field: str  # the FineTune resource's (camelCase)
    type: type  # int or float
    low: float
    high: float
    default: Any
    low_open: bool = False  # low itself is refused
    high_open: bool = False  # high itself is refused
    description: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of range or of the wrong type, or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.type is int and not isinstance(value, int)):
            return f"must be {'an integer' if self.type is int else 'a number'}"
        if value < self.low or (self.low_open and value == self.low) or value > self.high or (
                self.high_open and value == self.high):
            return f"must be {self.bounds()} (got {value})"
        return None

    def bounds(self) -> str:
        low = "greater than" if self.low_open else "at least"
        high = "less than" if self.high_open else "at most"
        return f"{low} {_number(self.low)} and {high} {_number(self.high)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


SEED_LIMIT = 2**31

RANGES: tuple[Range, ...] = (
    Range("epochs", "epochs", int, 1, 100, 3, description="Passes over the dataset."),
    Range("learning_rate", "learningRate", float, 0, 1, 1e-4, low_open=True,
          description="AdamW's learning rate."),
    Range("batch_size", "batchSize", int, 1, 64, 1, description="Examples per optimizer step."),
    Range("lora_rank", "loraRank", int, 1, 256, 8, description="The rank of each LoRA pair."),
    Range("lora_alpha", "loraAlpha", float, 0, 4096, 16.0, low_open=True,
          description="LoRA's alpha: the update is scaled by alpha / rank."),
    Range("lora_dropout", "loraDropout", float, 0, 1, 0.0, high_open=True,
          description="Dropout on the LoRA input while training."),
    Range("lora_layers", "loraLayers", int, 1, 128, 8, description="LoRA on this many of the last layers."),
    Range("max_seq_length", "maxSeqLength", int, 64, 32768, 512,
          description="Tokens per example; longer examples are cut."),
    Range("seed", "seed", int, 0, SEED_LIMIT, None, high_open=True,
          description="The same seed gives the same adapter; a random one when absent."),
)
BY_NAME = {r.name: r for r in RANGES}
BY_FIELD = {r.field: r for r in RANGES}


def hyperparameter_problems(values: dict[str, Any], *, prefix: str = "", camel: bool = True) -> list[str]:
    """Every problem of a FineTune's (camelCase) or Silicon's (snake_case) hyper-parameters."""
    table = BY_FIELD if camel else BY_NAME
    problems = []
    for key, value in values.items():
        spec = table.get(key)
        if spec is None:
            problems.append(f"{prefix}{key} is not a hyper-parameter (known: {', '.join(table)})")
        elif value is not None and (problem := spec.problem(value)):
            problems.append(f"{prefix}{key} {problem}")
    return problems


def snake_case(values: dict[str, Any]) -> dict[str, Any]:
    """A FineTune's hyper-parameters under Silicon's (and the trainer's) names."""
    return {BY_FIELD[k].name: v for k, v in values.items() if k in BY_FIELD}
