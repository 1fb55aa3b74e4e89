"""Ollama's Modelfile (the seed's `/api/create` takes one as `modelfile`), parsed into the
fields of Ollama's current create request: `from`, `system`, `template`, `parameters`,
`license`, and `adapter` (the ADAPTER line's argument, resolved by the create: a blob digest,
a path or an adapter model's name). Pure functions.

    FROM llama3.2
    ADAPTER @sha256:4f1c...
    PARAMETER temperature 0.2
    PARAMETER stop "<|end|>"
    SYSTEM \"\"\"You are terse.\"\"\"
"""
from __future__ import annotations

import re

_INTS = {"num_ctx", "num_predict", "top_k", "seed", "num_keep", "repeat_last_n", "num_batch", "num_gpu",
         "num_thread", "mirostat"}
_LISTS = {"stop"}
_COMMAND = re.compile(r"^\s*(\w+)\s+(.*)$", re.S)


class ModelfileError(ValueError):
    """The Modelfile does not parse; the message names the line."""


def _value(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _parameter(key: str, raw: str):
    value = _value(raw)
    try:
        if key in _INTS:
            return int(value)
        if key in _LISTS:
            return value
        return float(value)
    except ValueError:
        if key in _INTS:
            raise ModelfileError(f"PARAMETER {key} needs an integer, got {value!r}") from None
        return value  # a parameter Modelyard does not know keeps its text


def _commands(text: str):
    """(line number, command, argument) with triple-quoted arguments across lines."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _COMMAND.match(line)
        if not match:
            raise ModelfileError(f"line {number}: expected 'COMMAND argument', got {line.strip()!r}")
        command, arg = match.group(1).upper(), match.group(2)
        if arg.lstrip().startswith('"""'):
            body = arg.lstrip()[3:]
            while '"""' not in body:
                if i >= len(lines):
                    raise ModelfileError(f'line {number}: the """ of {command} is never closed')
                body += "\n" + lines[i]
                i += 1
            arg = body[:body.index('"""')]
        yield number, command, arg


def parse(text: str) -> dict:
    out: dict = {}
    params: dict = {}
    for number, command, arg in _commands(text):
        if command == "FROM":
            out["from"] = _value(arg)
        elif command in ("SYSTEM", "TEMPLATE", "LICENSE"):
            out[command.lower()] = arg if "\n" in arg else _value(arg)
        elif command == "PARAMETER":
            key, _, raw = arg.strip().partition(" ")
            if not raw.strip():
                raise ModelfileError(f"line {number}: PARAMETER needs a name and a value")
            value = _parameter(key, raw)
            if key in _LISTS:
                params.setdefault(key, []).append(value)
            else:
                params[key] = value
        elif command == "ADAPTER":
            if "adapter" in out:  # llama.cpp applies one set per request; a model names one
                raise ModelfileError(f"line {number}: one ADAPTER per model")
            out["adapter"] = _value(arg)
            if not out["adapter"]:
                raise ModelfileError(f"line {number}: ADAPTER needs a blob digest, a path or a model's name")
        elif command in ("MESSAGE", "REQUIRES"):
            raise ModelfileError(f"line {number}: {command} is not supported by Modelyard")
        else:
            raise ModelfileError(f"line {number}: unknown command {command}")
    if params:
        out["parameters"] = params
    if "from" not in out:
        raise ModelfileError("the Modelfile has no FROM line")
    return out
