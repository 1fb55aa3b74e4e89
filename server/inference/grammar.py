"""GBNF grammars that make the model's answer valid JSON, match a schema, or be a tool call.

The JSON-schema converter is llama-cpp-python's (llama_cpp.llama_grammar), a port of
llama.cpp's own json_schema_to_grammar, with the bounds it lacks added here (see
_converter). A bound no grammar can enforce is refused, not silently dropped.
"""
from __future__ import annotations

import functools
import json
import math

# Keywords that bound a number. A grammar enforces them on integers (by their digits);
# on other numbers ("minimum": 0.5, or "maximum" with a fraction allowed) it cannot.
NUMBER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
# Integers without a bound get at most 16 digits, as the port's own integer rule allows.
INT_LIMIT = 10 ** 16 - 1


class SchemaError(ValueError):
    pass


def for_schema(schema: dict, strict: bool = True) -> str:
    """The grammar of `schema`. strict: refuse bounds a grammar cannot enforce (a
    response_format promises them); otherwise leave them to the model (tool parameters)."""
    try:
        converter = _converter()(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        converter.strict = strict
        # resolve_refs rewrites "$ref"s in place: work on a copy, not the request's schema
        converter.visit(converter.resolve_refs(json.loads(json.dumps(schema)), "stdin"), "")
        return converter.format_grammar()
    except SchemaError:
        raise
    except Exception as exc:  # the converter raises plain ValueError/KeyError/AssertionError
        raise SchemaError(f"cannot turn the JSON schema into a grammar: {exc}") from None


def _times(item: str, lo: int, hi: int | None) -> str:
    """`item` lo..hi times (hi None: no limit) in GBNF's {m,n}, which llama.cpp expands
    itself; the port nests one optional group per repetition instead, which for a
    maxLength of thousands makes a grammar thousands of groups deep."""
    if hi == 0:
        return ""
    if lo == hi == 1:
        return item
    if (lo, hi) == (0, 1):
        return f"{item}?"
    if hi is None:
        return {0: f"{item}*", 1: f"{item}+"}.get(lo, f"{item}{{{lo},}}")
    return f"{item}{{{lo}}}" if lo == hi else f"{item}{{{lo},{hi}}}"


def _repeat(item: str, lo: int, hi: int | None, sep: str) -> str:
    """lo..hi `item`s with `sep` between them."""
    if hi == 0:
        return ""
    more = _times(f"({sep} {item})", max(lo - 1, 0), None if hi is None else hi - 1)
    return f"{item} {more}" if lo > 0 else f"({item} {more})?"


def _digit(a: int, b: int) -> str:
    return f"[{a}]" if a == b else f"[{a}-{b}]"


def _same_length(x: str, y: str) -> str:
    """The numerals from x to y, which have the same number of digits (x <= y)."""
    i = 0
    while i < len(x) and x[i] == y[i]:
        i += 1
    head = f'"{x[:i]}"' if i else ""
    if i == len(x):
        return head
    x, y, n = x[i:], y[i:], len(x) - i - 1
    if n == 0:
        return f"{head} {_digit(int(x), int(y))}".strip()
    alts, lo, hi = [], int(x[0]), int(y[0])
    if x[1:] != "0" * n:  # x's first digit, then no less than the rest of x
        alts.append(f"[{x[0]}] ({_same_length(x[1:], '9' * n)})")
        lo += 1
    if y[1:] != "9" * n:  # y's first digit, then no more than the rest of y
        alts.append(f"[{y[0]}] ({_same_length('0' * n, y[1:])})")
        hi -= 1
    if lo <= hi:  # the first digits between: any digits after them
        alts.append(f"{_digit(lo, hi)} {_times('[0-9]', n, n)}")
    return f"{head} ({' | '.join(alts)})".strip()


def _naturals(a: int, b: int) -> list[str]:
    """Alternatives that together match the numerals a..b (0 <= a <= b), without leading zeros."""
    alts = []
    if a == 0:
        alts.append("[0]")
        a = 1
    while a <= b:
        length = len(str(a))
        top = min(b, 10 ** length - 1)
        if a == 10 ** (length - 1) and top == 10 ** length - 1:
            longest = length  # every numeral of these lengths: one rule for them all
            while 10 ** (longest + 1) - 1 <= b:
                longest += 1
            alts.append(f"[1-9] {_times('[0-9]', length - 1, longest - 1)}".strip())
            a = 10 ** longest
        else:
            alts.append(_same_length(str(a), str(top)))
            a = top + 1
    return alts


def integer_range(lo: int | None, hi: int | None) -> str:
    """A GBNF expression for the JSON integers lo..hi (None: unbounded on that side)."""
    hi = max(INT_LIMIT, lo or 0) if hi is None else hi
    lo = min(-INT_LIMIT, hi) if lo is None else lo
    if hi < 0:
        return f'"-" ({" | ".join(_naturals(-hi, -lo))})'
    alts = _naturals(max(lo, 0), hi)
    if lo < 0:
        alts.insert(0, f'"-" ({" | ".join(_naturals(1, -lo))})')
    return " | ".join(alts)


def _number(schema: dict, key: str, where: str):
    v = schema.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise SchemaError(f"JSON schema at {where}: '{key}' must be a number")
    return v


def integer_bounds(schema: dict, where: str) -> tuple[int | None, int | None]:
    """The smallest and largest integer `schema` allows (None: no bound)."""
    lo, hi = _number(schema, "minimum", where), _number(schema, "maximum", where)
    lo = None if lo is None else math.ceil(lo)
    hi = None if hi is None else math.floor(hi)
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    # draft 4: a flag that makes minimum/maximum exclusive (ceil/floor already did, for a fraction)
    if xlo is True and lo is not None and lo == schema["minimum"]:
        lo += 1
    if xhi is True and hi is not None and hi == schema["maximum"]:
        hi -= 1
    if not isinstance(xlo, bool) and _number(schema, "exclusiveMinimum", where) is not None:
        lo = max(math.floor(xlo) + 1, lo if lo is not None else -math.inf)
    if not isinstance(xhi, bool) and _number(schema, "exclusiveMaximum", where) is not None:
        hi = min(math.ceil(xhi) - 1, hi if hi is not None else math.inf)
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"JSON schema at {where}: no integer lies within its bounds")
    return lo, hi


def _count(schema: dict, low: str, high: str, where: str) -> tuple[int, int | None]:
    lo, hi = schema.get(low, 0), schema.get(high)
    for key, v in ((low, lo), (high, hi)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise SchemaError(f"JSON schema at {where}: '{key}' must be a whole number >= 0")
    if hi is not None and lo > hi:
        raise SchemaError(f"JSON schema at {where}: '{low}' is more than '{high}'")
    return lo, hi


@functools.cache
def _converter():
    """llama-cpp-python's SchemaConverter, with what the port lacks (llama.cpp's C++
    converter has it all): integer minimum/maximum (the port ignores them), minItems/
    maxItems on arrays without `items`, bounds kept on each type of a type list, and a
    JSON string character (the port lets raw control characters into strings, which
    JSON parsers refuse). Built on first use: importing llama_cpp loads the library."""
    from llama_cpp import llama_grammar as lg

    # No raw control characters, and no escaped surrogates: each character the grammar
    # counts is one code point, as minLength/maxLength count them.
    char = lg.BuiltinRule(r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] [0-9a-fA-F]{3} | '
                          r'[dD] [0-7] [0-9a-fA-F]{2}))', [])

    class Converter(lg.SchemaConverter):
        strict = True

        def _add_primitive(self, name, rule):
            return super()._add_primitive(name, char if name == "char" else rule)

        def visit(self, schema, name):
            if not isinstance(schema, dict) or any(k in schema for k in ("$ref", "oneOf", "anyOf", "const", "enum")):
                return super().visit(schema, name)
            kind = schema.get("type")
            rule = name + "-" if name in lg.RESERVED_NAMES else name or "root"
            where = f"'{name}'" if name else "the top level"
            if isinstance(kind, list):  # the port would visit bare {"type": t} alternatives
                return self._add_rule(rule, self._generate_union_rule(name, [{**schema, "type": t} for t in kind]))
            if self.strict:
                self._refuse(schema, kind, where)
            if kind == "integer" and any(k in schema for k in NUMBER_BOUNDS[:4]):
                return self._add_rule(rule, f"({integer_range(*integer_bounds(schema, where))}) space")
            if kind == "string" and ("minLength" in schema or "maxLength" in schema) \
                    and "pattern" not in schema and "format" not in schema:
                lo, hi = _count(schema, "minLength", "maxLength", where)
                c = self._add_primitive("char", char)
                return self._add_rule(rule, f'"\\"" {_times(c, lo, hi)} "\\"" space')
            if kind == "array" and ("minItems" in schema or "maxItems" in schema) \
                    and not isinstance(schema.get("items"), list) and "prefixItems" not in schema:
                lo, hi = _count(schema, "minItems", "maxItems", where)
                items = schema.get("items")
                item = (self.visit(items, f"{name}{'-' if name else ''}item") if items
                        else self._add_primitive("value", lg.PRIMITIVE_RULES["value"]))  # {} or none: any value
                return self._add_rule(rule, '"[" space ' + _repeat(item, lo, hi, '"," space') + ' "]" space')
            return super().visit(schema, name)

        @staticmethod
        def _refuse(schema, kind, where):
            if kind != "integer":
                bound = next((k for k in NUMBER_BOUNDS if k in schema), None)
                if bound and kind in (None, "number"):
                    fix = "drop it" if bound == "multipleOf" else f"use \"type\": \"integer\", or drop '{bound}'"
                    raise SchemaError(f"JSON schema at {where}: '{bound}' on a number cannot be enforced by "
                                      f"the grammar that shapes the answer; {fix}")
            elif schema.get("multipleOf", 1) != 1:
                raise SchemaError(f"JSON schema at {where}: 'multipleOf' cannot be enforced by the grammar "
                                  "that shapes the answer; drop it")
            if kind == "string" and ("minLength" in schema or "maxLength" in schema) \
                    and ("pattern" in schema or "format" in schema):
                raise SchemaError(f"JSON schema at {where}: minLength/maxLength together with "
                                  f"'{'pattern' if 'pattern' in schema else 'format'}' cannot be enforced; "
                                  "put the length into the pattern")

    return Converter


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
    # Tool parameters are a description for the model; OpenAI holds calls to them only in
    # strict mode. Bounds no grammar can hold are left to the model rather than refused.
    return for_schema(call_schema(tools, only), strict=False)
