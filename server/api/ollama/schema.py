"""Ollama's request bodies, declared as pydantic models, and their translation into the
engines' typed requests.

Unknown fields and unknown `options` are ignored, as Ollama does: clients send options for
other runners (`num_gpu`, `use_mmap`, ...), and they must not be an error.
"""
from __future__ import annotations

import json
import re
from typing import Any, Literal, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelyard.server.http.bodies import describe
from modelyard.server.inference import images as image_data
from modelyard.server.inference.llama.sampling import SamplingParams
from modelyard.server.inference.requests import IMAGE_MARKER, ImagePart, RequestError


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Body):
    """The runner options llama.cpp can honour; the rest are accepted and ignored."""

    num_predict: Optional[int] = Field(None, description="Tokens to generate; -1 or absent: until done.")
    temperature: Optional[float] = Field(None, ge=0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    repeat_penalty: Optional[float] = Field(None, ge=0)
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    num_ctx: Optional[int] = Field(None, ge=1, description="Accepted; the model's context is its registry setting.")
    # Not one of Ollama's options, but one llama.cpp honours (as /v1 does): token id -> bias.
    logit_bias: Optional[dict[int, float]] = Field(None, description="Token id to a bias, as on /v1.")

    def sampling(self, grammar: str | None = None) -> SamplingParams:
        return SamplingParams(
            temperature=0.8 if self.temperature is None else self.temperature,  # Ollama's default
            top_p=0.9 if self.top_p is None else self.top_p,
            top_k=40 if self.top_k is None else self.top_k,
            min_p=self.min_p or 0.0, seed=self.seed,
            repeat_penalty=1.1 if self.repeat_penalty is None else self.repeat_penalty,
            presence_penalty=self.presence_penalty or 0.0, frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=dict(self.logit_bias or {}), grammar=grammar)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop or [] if s]

    def max_tokens(self) -> int | None:
        return self.num_predict if self.num_predict and self.num_predict > 0 else None


def with_defaults(options: Options | None, parameters: dict | None) -> Options:
    """The request's options over the model's own parameters (its Modelfile's PARAMETERs).
    A stored parameter that does not fit is skipped: it came from a registry, not this client."""
    merged = dict(options.model_dump(exclude_none=True)) if options else {}
    for key, value in (parameters or {}).items():
        if key not in merged:
            try:
                Options.model_validate({key: value})
            except pydantic.ValidationError:
                continue
            merged[key] = value
    return Options.model_validate(merged)


KeepAlive = Union[int, float, str, None]
Format = Union[Literal["json", ""], dict[str, Any], None]


# Mullama's top-level sampling fields (the daemon shares /api/generate, /api/chat and
# /api/embeddings with Ollama) and the Ollama option each one is.
MULLAMA_FIELDS = {"max_tokens": "num_predict", "temperature": "temperature", "top_p": "top_p",
                  "top_k": "top_k", "stop": "stop"}


class _Generating(_Body):
    model: Optional[str] = Field(None, min_length=1, description="A model name (name:tag) or registry id; "
                                 "absent: the default model (Mullama's set_default, or the first loaded).")
    stream: bool = Field(True, description="Ollama's default is to stream; a Mullama request (one that "
                         "names no model, or uses max_tokens, temperature, top_p, top_k or stop at the "
                         "top level) defaults to one object, as Mullama's does.")
    format: Format = Field(None, description='"json", or a JSON schema the answer must follow.')
    options: Optional[Options] = None
    keep_alive: KeepAlive = Field(None, description="Seconds or a duration (5m); 0 unloads after the answer.")
    think: Optional[Union[bool, str]] = None
    # Mullama's fields; `options` wins where both name one.
    max_tokens: Optional[int] = Field(None, ge=1, description="Mullama: tokens to generate (options.num_predict).")
    temperature: Optional[float] = Field(None, ge=0, description="Mullama: options.temperature.")
    top_p: Optional[float] = Field(None, ge=0, le=1, description="Mullama: options.top_p.")
    top_k: Optional[int] = Field(None, ge=0, description="Mullama: options.top_k.")
    stop: Optional[Union[str, list[str]]] = Field(None, description="Mullama: options.stop.")

    @model_validator(mode="before")
    @classmethod
    def _mullama_stream_default(cls, data):
        if isinstance(data, dict) and "stream" not in data and (
                not data.get("model") or any(data.get(k) is not None for k in MULLAMA_FIELDS)):
            data = {**data, "stream": False}
        return data

    @property
    def opts(self) -> Options:
        return self.options or Options()

    def all_options(self) -> Options | None:
        """`options` with Mullama's top-level fields filled in."""
        top = {option: getattr(self, field) for field, option in MULLAMA_FIELDS.items()
               if getattr(self, field) is not None}
        if not top:
            return self.options
        return Options.model_validate({**top, **(self.options.model_dump(exclude_none=True) if self.options else {})})

    def response_format(self) -> dict | None:
        if self.format == "json":
            return {"type": "json_object"}
        if isinstance(self.format, dict):
            return {"type": "json_schema", "json_schema": {"name": "format", "schema": self.format}}
        return None


class GenerateBody(_Generating):
    """POST /api/generate."""

    prompt: Optional[str] = None
    suffix: Optional[str] = None
    system: Optional[str] = None
    template: Optional[str] = None
    raw: bool = False
    context: Optional[list[int]] = Field(None, description="The context a previous answer returned.")
    images: Optional[list[str]] = Field(None, description="Base64 images, for a vlm.")


class OllamaToolCallFunction(_Body):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(_Body):
    function: OllamaToolCallFunction


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Optional[list[str]] = None
    tool_calls: Optional[list[OllamaToolCall]] = None
    thinking: Optional[str] = None
    tool_name: Optional[str] = None


class ChatBody(_Generating):
    """POST /api/chat."""

    messages: list[ChatMessage] = Field(default_factory=list)
    tools: Optional[list[dict[str, Any]]] = None
    system: Optional[str] = Field(None, description="Mullama: a system prompt, used when `messages` has none.")


class EmbedBody(_Body):
    """POST /api/embed."""

    model: str = Field(min_length=1)
    input: Union[str, list[str]]
    truncate: bool = True
    dimensions: Optional[int] = Field(None, ge=1)
    keep_alive: KeepAlive = None
    options: Optional[dict[str, Any]] = None


class EmbeddingsBody(_Body):
    """POST /api/embeddings: Ollama's older form (`prompt`: one text) or Mullama's (`input`:
    a text or a list; `model` may be absent)."""

    model: Optional[str] = Field(None, min_length=1, description="Absent: the default model (Mullama).")
    prompt: Optional[str] = None
    input: Optional[Union[str, list[str]]] = Field(None, description="Mullama: the text or texts to embed.")
    keep_alive: KeepAlive = None
    options: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _one_input(self):
        if self.prompt is None and self.input is None:
            raise ValueError("'prompt' (Ollama) or 'input' (Mullama) is required")
        return self




class _Named(_Body):
    """A body naming a model as `model` (Ollama) or `name` (the Ollama Toolkit, older Ollama)."""

    model: Optional[str] = None
    name: Optional[str] = None

    @model_validator(mode="after")
    def _named(self):
        if not (self.model or self.name):
            raise ValueError("'model' is required")
        return self

    @property
    def target(self) -> str:
        return self.model or self.name



class ShowBody(_Named):
    """POST /api/show; `name` is the older spelling of `model`."""

    verbose: bool = False


class CopyBody(_Body):
    """POST /api/copy: a second name for the same file."""

    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class DeleteBody(ShowBody):
    """DELETE /api/delete (`model`, or the older `name`)."""


def validate(model: type[BaseModel], body: dict):
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise RequestError(describe(exc)) from None


_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)?$")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def keep_alive_seconds(value: KeepAlive) -> float | None:
    """None: the default; 0: unload now; negative: keep loaded. Go's durations (5m, 1h30m)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    total, rest = 0.0, value.strip()
    for number, unit in re.findall(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)?", rest):
        total += float(number) * _UNIT[unit or None]
    if not re.fullmatch(r"(-?\d+(?:\.\d+)?(ns|us|µs|ms|s|m|h)?)+", rest):
        raise RequestError(f"'keep_alive' must be seconds or a duration such as 5m, got {value!r}")
    return total


def decode_images(images: list[str] | None, where: str) -> list[ImagePart]:
    out = []
    for i, data in enumerate(images or []):
        data = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
        try:
            out.append(ImagePart(image_data.decode_base64(data, f"{where}.images[{i}]"), f"{where}.images[{i}]"))
        except image_data.ImageError as exc:
            raise RequestError(str(exc)) from None
    return out


def chat_messages(body: ChatBody) -> tuple[list[dict], list[ImagePart]]:
    """Ollama's messages as the engines' (OpenAI-shaped) messages: tool-call arguments
    become JSON strings, images become markers in the text."""
    out, images = [], []
    for i, m in enumerate(body.messages):
        imgs = decode_images(m.images, f"messages[{i}]")
        images += imgs
        content = m.content + "".join(IMAGE_MARKER for _ in imgs)
        msg: dict = {"role": m.role, "content": content}
        if m.tool_calls:
            msg["tool_calls"] = [{"id": f"call_{i}_{j}", "type": "function",
                                  "function": {"name": c.function.name,
                                               "arguments": json.dumps(c.function.arguments)}}
                                 for j, c in enumerate(m.tool_calls)]
        if m.role == "tool":
            msg["tool_call_id"] = m.tool_name or ""
            if m.tool_name:
                msg["name"] = m.tool_name
        out.append(msg)
    return out, images


class PullBody(_Named):
    """POST /api/pull and POST /api/push."""

    stream: bool = True
    insecure: bool = Field(False, description="Reach the registry over plain http (a registry on loopback).")


class CreateBody(_Named):
    """POST /api/create: Ollama's fields, or the Ollama Toolkit's `modelfile`."""

    stream: bool = True
    from_: Optional[str] = Field(None, alias="from", description="The model to start from.")
    files: Optional[dict[str, str]] = Field(None, description="File name -> blob digest (sha256:...).")
    template: Optional[str] = None
    system: Optional[str] = None
    license: Optional[Union[str, list[str]]] = None
    parameters: Optional[dict[str, Any]] = None
    quantize: Optional[str] = Field(None, description="q4_K_M, q8_0, ...: quantize with llama.cpp.")
    modelfile: Optional[str] = None
    adapters: Optional[dict[str, str]] = None
