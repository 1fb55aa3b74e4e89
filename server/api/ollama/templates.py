"""Ollama's prompt templates (Go's text/template) for /api/generate: the subset that
generate templates use, rendered to the raw prompt. Pure.

    {{ if .System }}<|system|>{{ .System }}<|end|>{{ end }}<|user|>{{ .Prompt }}<|end|><|assistant|>

Supported: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}` (empty: the model writes it),
`{{ .Suffix }}`, `{{ if .X }} ... {{ else }} ... {{ end }}` (nested), and the `{{-` / `-}}`
whitespace trims. A chat template that ranges over `.Messages` is Go code we do not run:
it is refused with a message, and chat keeps the model's own (GGUF) template.
"""
from __future__ import annotations

import re

_ACTION = re.compile(r"(\s*)\{\{(-?)\s*(.*?)\s*(-?)\}\}(\s*)", re.S)
_FIELDS = ("System", "Prompt", "Response", "Suffix")


class TemplateError(ValueError):
    """A template this renderer cannot run; the message says what."""


def _tokens(template: str):
    """('text', str) and ('action', str) pieces, with the trim markers applied."""
    pos, out = 0, []
    for m in _ACTION.finditer(template):
        lead, trim_left, action, trim_right, trail = m.groups()
        out.append(("text", template[pos:m.start()] + ("" if trim_left else lead)))
        out.append(("action", action))
        pos = m.end()
        if not trim_right:
            pos -= len(trail)
    out.append(("text", template[pos:]))
    return out


def render(template: str, values: dict[str, str]) -> str:
    stack: list[list] = [[True, True]]  # [emitting, this branch taken]
    out: list[str] = []
    for kind, piece in _tokens(template):
        emitting = all(frame[0] for frame in stack)
        if kind == "text":
            if emitting:
                out.append(piece)
            continue
        if piece.startswith("if "):
            field = _field(piece[3:])
            taken = bool(values.get(field))
            stack.append([taken, taken])
        elif piece == "else":
            if len(stack) == 1:
                raise TemplateError("{{ else }} without {{ if }}")
            stack[-1][0] = not stack[-1][1]
        elif piece == "end":
            if len(stack) == 1:
                raise TemplateError("{{ end }} without {{ if }}")
            stack.pop()
        elif piece.startswith("."):
            if emitting:
                out.append(values.get(_field(piece), ""))
        else:
            raise TemplateError(f"the template uses {{{{ {piece} }}}}, which Modelyard does not run; "
                                "it runs .System, .Prompt, .Response, .Suffix and if/else/end")
    if len(stack) != 1:
        raise TemplateError("an {{ if }} has no {{ end }}")
    return "".join(out)


def _field(expr: str) -> str:
    name = expr.strip().removeprefix(".")
    if name not in _FIELDS:
        raise TemplateError(f"the template uses .{name}; Modelyard knows {', '.join('.' + f for f in _FIELDS)}")
    return name
