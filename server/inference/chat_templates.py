"""Chat formatting: messages to the prompt text the model was trained on.

Three sources, in this order:
1. the model's chatTemplateHint: one of llama.cpp's built-in templates, by name;
2. the GGUF's own tokenizer.chat_template (Jinja), rendered as llama-cpp-python and
   Hugging Face render it;
3. neither: a clear error. Guessing a format gives nonsense answers that look like bugs.
"""
from __future__ import annotations

import ctypes
import functools
import json
from dataclasses import dataclass
from datetime import datetime

from modelyard.server.inference import tool_calls
from modelyard.server.shared.facts import CHAT_TEMPLATE_HINTS



class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class ChatPrompt:
    text: str
    # Whether tokenizing should add the vocabulary's BOS: built-in templates leave it
    # out, Jinja templates write {{ bos_token }} themselves when the model wants it.
    add_special: bool


def format_chat(messages: list[dict], *, hint: str | None, gguf_template: str | None,
                bos_token: str = "", eos_token: str = "", tools: list[dict] | None = None) -> ChatPrompt:
    if hint:
        if hint not in CHAT_TEMPLATE_HINTS:
            raise TemplateError(f"Unknown chatTemplateHint {hint!r}; known: {', '.join(CHAT_TEMPLATE_HINTS)}")
        return ChatPrompt(render_builtin(hint, plain_messages(messages, tools, hint == "chatml")), True)
    if gguf_template:
        native_tools = "tools" in gguf_template
        msgs = messages if native_tools else plain_messages(messages, tools, True)
        text = render_jinja(gguf_template, msgs, bos_token, eos_token,
                            tools=tools if native_tools else None)
        return ChatPrompt(text, False)
    raise TemplateError(
        "This model has no chat template: set gguf.chatTemplateHint on the model "
        f"(one of {', '.join(CHAT_TEMPLATE_HINTS)}) or use /v1/completions with a formatted prompt")


def plain_messages(messages: list[dict], tools: list[dict] | None, tool_role: bool) -> list[dict]:
    """Messages with only role and text, for templates that know nothing of tools."""
    out = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = "\n".join(tool_calls.call_text(c) for c in m["tool_calls"])
            content = f"{content}\n{calls}" if content else calls
        elif role == "tool":
            content = f"<tool_response>\n{content}\n</tool_response>"
            role = "tool" if tool_role else "user"
        out.append({"role": role, "content": content})
    if tools:
        text = tool_calls.tools_system_text(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def render_builtin(name: str, messages: list[dict]) -> str:
    import llama_cpp as L

    arr = (L.llama_chat_message * len(messages))()
    keep = []  # the C strings must outlive the call
    for i, m in enumerate(messages):
        role, content = m["role"].encode(), (m.get("content") or "").encode()
        keep += [role, content]
        arr[i].role = role
        arr[i].content = content
    size = max(256, 2 * sum(len(k) for k in keep) + 1024)
    buf = ctypes.create_string_buffer(size)
    n = L.llama_chat_apply_template(name.encode(), arr, len(messages), True, buf, size)
    if n > size:
        buf = ctypes.create_string_buffer(n + 1)
        n = L.llama_chat_apply_template(name.encode(), arr, len(messages), True, buf, n + 1)
    if n < 0:
        raise TemplateError(f"llama.cpp has no built-in chat template named {name!r}")
    return buf.raw[:n].decode(errors="replace")


def render_jinja(template: str, messages: list[dict], bos_token: str, eos_token: str,
                 tools: list[dict] | None = None) -> str:
    def raise_exception(message):
        raise TemplateError(f"The model's chat template refused the messages: {message}")

    try:
        return _compile(template).render(
            messages=messages, bos_token=bos_token, eos_token=eos_token,
            add_generation_prompt=True, tools=tools, raise_exception=raise_exception,
            strftime_now=lambda f: datetime.now().strftime(f))
    except TemplateError:
        raise
    except Exception as exc:
        raise TemplateError(f"The model's chat template failed: {type(exc).__name__}: {exc}") from None


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    # The settings Hugging Face transformers and llama-cpp-python use, so that a model's
    # template renders here exactly as it was meant to.
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, separators=None, sort_keys=False: \
        json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"The model's chat template does not parse: {exc}") from None
