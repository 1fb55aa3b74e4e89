"""GBNF grammars that make the model's answer valid JSON, match a schema, or be a tool call.

The JSON-schema converter is llama-cpp-python's (llama_cpp.llama_grammar), a port of
llama.cpp's own json_schema_to_grammar.
"""
from __future__ import annotations

import json



class SchemaError(ValueError):
    pass


def for_schema(schema: dict) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises plain ValueError/KeyError/etc.
        raise SchemaError(f"cannot turn the JSON schema into a grammar: {exc}") from None


def for_response_format(response_format: dict | None) -> str | None:
    """The grammar for OpenAI's response_format, or None for free text."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema = response_format.get("schema")  # llama.cpp's extension; plain JSON without it
        if isinstance(schema, dict):
            return for_schema(schema)
        from llama_cpp.llama_grammar import JSON_GBNF

        return JSON_GBNF
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise SchemaError("response_format.json_schema.schema must be a JSON schema object")
        return for_schema(spec["schema"])
    raise SchemaError(f"response_format.type must be text, json_object or json_schema, not {kind!r}")


def call_schema(tools: list[dict], only: str | None = None) -> dict:
    """A JSON schema for one call {"name": ..., "arguments": {...}} to one of `tools`."""
    options = []
    for tool in tools:
        fn = tool["function"]
        if only is not None and fn["name"] != only:
            continue
        params = fn.get("parameters") or {"type": "object"}
        options.append({
            "type": "object",
            "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    if not options:
        raise SchemaError(f"tool_choice names a function that is not in tools: {only!r}")
    return options[0] if len(options) == 1 else {"oneOf": options}


def for_tool_call(tools: list[dict], only: str | None = None) -> str:
    return for_schema(call_schema(tools, only))
