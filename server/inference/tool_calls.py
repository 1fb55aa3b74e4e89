"""Tools in the prompt and tool calls out of the answer, in the Hermes/Qwen style.

Templates that know about tools get them natively (Jinja templates take `tools`). For
the others, the tool definitions go into the system message with instructions to answer
with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, which is what most
open models are trained on. The parser also takes a bare JSON object of that shape.
"""
from __future__ import annotations

import json
import re
import uuid

CALL_TAG = "<tool_call>"
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)

TOOLS_PREAMBLE = (
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def tools_system_text(tools: list[dict]) -> str:
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return TOOLS_PREAMBLE + lines + TOOLS_INSTRUCTIONS


def call_text(call: dict) -> str:
    """How an earlier assistant tool call is written back into the prompt."""
    fn = call.get("function", {})
    args = fn.get("arguments", "{}")
    try:
        args = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        pass
    return "<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": args},
                                        ensure_ascii=False) + "\n</tool_call>"


def _as_call(obj, names: set[str]) -> dict | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    if names and obj["name"] not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)},
    }


def parse(text: str, tool_names: set[str] | frozenset = frozenset()) -> tuple[str | None, list[dict]]:
    """Split an answer into (content, tool_calls). Content is None when only calls remain."""
    calls = []
    if CALL_TAG in text:
        for m in _TAGGED.finditer(text):
            try:
                call = _as_call(json.loads(m.group(1)), set(tool_names))
            except ValueError:
                call = None
            if call:
                calls.append(call)
        if calls:
            rest = _TAGGED.sub("", text).strip()
            return (rest or None), calls
        return text, []
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            return text, []
        items = obj if isinstance(obj, list) else [obj]
        calls = [c for c in (_as_call(o, set(tool_names)) for o in items) if c]
        if calls and len(calls) == len(items):
            return None, calls
    return text, []


def may_become_call(text: str) -> bool:
    """While streaming: could this beginning of an answer still turn out to be a tool call?"""
    s = text.lstrip()
    if not s:
        return True
    return s.startswith("{") or s.startswith(CALL_TAG) or CALL_TAG.startswith(s)
