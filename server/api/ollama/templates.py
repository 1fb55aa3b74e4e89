"""Ollama's prompt templates (Go's text/template) for /api/generate: the subset that
generate templates use, rendered to the raw prompt. Pure.

    {{ if .System }}<|system|>{{ .System }}<|end|>{{ end }}<|user|>{{ .Prompt }}<|end|><|assistant|>

Supported: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}` (empty: the model writes it),
`{{ .Suffix }}`, `{{ if .X }} ... {{ else }} ... {{ end }}` (nested), and the `{{-` / `-}}`
whitespace trims. A chat template that ranges over `.Messages` is Go code we do not run:
it is refused with a message, and chat keeps the model's own (GGUF) template.

A template is untrusted input (a request's, a pulled model's layer, a create's): parsing is
one pass with str.find (no regular expression that backtracks over whitespace or an unclosed
`{{`), nesting is tracked by a counter (not re-checked per piece), the size and the depth are
capped, and rendering stops as soon as the output passes what the model's context can hold.
"""
from __future__ import annotations

_FIELDS = ("System", "Prompt", "Response", "Suffix")
# Ollama's own templates are a few KiB; 64 KiB leaves room for long system texts in them.
MAX_TEMPLATE_BYTES = 64 * 1024
MAX_DEPTH = 64  # nested {{ if }}: Ollama's templates nest two or three deep


class TemplateError(ValueError):
    """A template this renderer cannot run; the message says what."""


class TemplateLimit(TemplateError):
    """A template over a limit (size, nesting, rendered length): refused wherever it comes from."""


class RenderTooLong(TemplateLimit):
    """The rendered prompt is longer than the model's context can hold."""


def _tokens(template: str):
    """('text', str) and ('action', str) pieces, with the trim markers applied. Linear."""
    pos, n = 0, len(template)
    text_start = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            yield "text", template[text_start:]
            return
        end = template.find("}}", start + 2)
        if end < 0:
            raise TemplateError("a {{ has no }}")
        inner = template[start + 2:end]
        trim_left = inner.startswith("-")
        trim_right = len(inner) > 1 and inner.endswith("-")
        if trim_left:
            inner = inner[1:]
        if trim_right:
            inner = inner[:-1]
        text = template[text_start:start]
        yield "text", text.rstrip() if trim_left else text
        yield "action", inner.strip()
        pos = end + 2
        if trim_right:
            while pos < n and template[pos].isspace():
                pos += 1
        text_start = pos


def check(template: str) -> None:
    """Refuse a template over the limits (TemplateLimit), wherever it comes from: a request,
    /api/create, a pulled model's template layer. A template this renderer does not run
    (a chat template over .Messages) passes: chat keeps the model's GGUF template then."""
    size = len(template.encode("utf-8", "surrogatepass"))
    if size > MAX_TEMPLATE_BYTES:
        raise TemplateLimit(f"the template is {size} bytes; Modelyard takes templates of at most "
                            f"{MAX_TEMPLATE_BYTES} bytes")
    depth = 0
    try:
        for kind, piece in _tokens(template):
            if kind != "action":
                continue
            head = piece.split(None, 1)[0] if piece else ""
            if head in ("if", "range", "with", "block", "define"):
                depth += 1
                if depth > MAX_DEPTH:
                    raise TemplateLimit(f"the template nests more than {MAX_DEPTH} blocks deep")
            elif head == "end":
                depth = max(depth - 1, 0)
    except TemplateLimit:
        raise
    except TemplateError:
        return  # unparseable here: render refuses it with its own message, chat is unaffected


def render(template: str, values: dict[str, str], max_bytes: int | None = None) -> str:
    """The prompt `template` makes of `values`. Stops with RenderTooLong as soon as the output
    passes `max_bytes` (UTF-8), so a template that repeats a long prompt costs no more than
    the context can hold."""
    check(template)
    stack: list[bool] = []  # per open {{ if }}: whether its branch taken so far was taken
    muted = 0  # how many open frames are not emitting; emitting when 0
    frames: list[bool] = []  # per open {{ if }}: emitting in that frame itself
    out: list[str] = []
    size = 0
    for kind, piece in _tokens(template):
        if kind == "text" or (kind == "action" and piece.startswith(".")):
            if muted:
                continue
            text = piece if kind == "text" else values.get(_field(piece), "")
            if not text:
                continue
            out.append(text)
            if max_bytes is not None:
                size += len(text.encode("utf-8", "surrogatepass"))
                if size > max_bytes:
                    raise RenderTooLong(f"the prompt the template renders passes {max_bytes} bytes, "
                                        "more than the model's context can hold")
            continue
        if piece.startswith("if "):
            taken = bool(values.get(_field(piece[3:])))
            stack.append(taken)
            frames.append(taken)
            if not taken:
                muted += 1
        elif piece == "else":
            if not stack:
                raise TemplateError("{{ else }} without {{ if }}")
            was = frames[-1]
            now = not stack[-1]
            frames[-1] = now
            muted += (not now) - (not was)
        elif piece == "end":
            if not stack:
                raise TemplateError("{{ end }} without {{ if }}")
            stack.pop()
            if not frames.pop():
                muted -= 1
        else:
            raise TemplateError(f"the template uses {{{{ {piece} }}}}, which Modelyard does not run; "
                                "it runs .System, .Prompt, .Response, .Suffix and if/else/end")
    if stack:
        raise TemplateError("an {{ if }} has no {{ end }}")
    return "".join(out)


def _field(expr: str) -> str:
    name = expr.strip().removeprefix(".")
    if name not in _FIELDS:
        raise TemplateError(f"the template uses .{name}; Modelyard knows {', '.join('.' + f for f in _FIELDS)}")
    return name
