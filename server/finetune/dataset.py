"""Training data for a LoRA fine-tune: JSONL, one example a line, read and checked before a
job starts so a bad line is a 400 that names it, not a failed job.

Three shapes, as mlx-lm's LoRA trainer (what Silicon Studio runs) takes them:
- `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}`: a chat,
  rendered with the base model's chat template; the loss is on the assistant turns only;
- `{"prompt": "...", "completion": "..."}`: the loss is on the completion only;
- `{"text": "..."}`: the loss is on all of it.
"""
from __future__ import annotations

import json
from pathlib import Path

from modelyard.server.finetune.errors import DatasetError

ROLES = ("system", "user", "assistant")
# A dataset is read into memory whole (the trainer tokenizes it up front): a bound keeps a
# wrong path (a model file) from filling the server's memory.
MAX_DATASET_BYTES = 1 << 30


def read(path: Path) -> list[dict]:
    """The examples of a JSONL file, each as it will be trained. Raises DatasetError."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(f"Dataset '{path}' does not exist") from None
    except OSError as exc:
        raise DatasetError(f"Dataset '{path}' cannot be read: {exc.strerror}") from None
    if not path.is_file():
        raise DatasetError(f"Dataset '{path}' is not a file")
    if size > MAX_DATASET_BYTES:
        raise DatasetError(f"Dataset '{path}' is {size} bytes; the limit is {MAX_DATASET_BYTES}")
    with open(path, "rb") as f:
        return parse(f.read(), str(path))


def parse(data: bytes, name: str = "the dataset") -> list[dict]:
    examples = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            examples.append(example(json.loads(line.decode("utf-8"))))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DatasetError(f"Line {number} of {name}: {_reason(exc)}") from None
    if not examples:
        raise DatasetError(f"{name[:1].upper()}{name[1:]} has no examples: write one JSON object a line")
    return examples


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(exc)


def example(obj: object) -> dict:
    """One line's example in a normal form; ValueError says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in obj:
        return {"messages": _messages(obj["messages"])}
    if "prompt" in obj or "completion" in obj:
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError("'prompt' and 'completion' must both be strings")
        if not completion:
            raise ValueError("'completion' is empty: there is nothing to learn")
        return {"prompt": prompt, "completion": completion}
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"]:
            raise ValueError("'text' must be a non-empty string")
        return {"text": obj["text"]}
    raise ValueError("an example has 'messages', 'prompt' and 'completion', or 'text'")


def _messages(messages: object) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be {{\"role\": one of {', '.join(ROLES)}, "
                             f"\"content\": a string}}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError("'messages' has no assistant turn: the loss is on assistant turns only")
    return out
