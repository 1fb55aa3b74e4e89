"""The OpenAI API's request bodies, declared as pydantic models, and their translation into
the engines' typed requests.

Unknown fields are ignored, as clients send vendor extras (`user`, `store`, `metadata`,
`parallel_tool_calls`); known ones are checked strictly (a JSON true is not a number).
Pure: nothing here touches a model.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelyard.server.http.bodies import describe
from modelyard.server.inference import images as image_data
from modelyard.server.inference.llama.sampling import SamplingParams
from modelyard.server.inference.requests import (IMAGE_MARKER, ChatRequest, CompletionRequest, RequestError,
                                                  EmbeddingRequest, ImagePart)

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOPS = 16
MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 16
MAX_EMBEDDING_INPUTS = 2048


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


# ---- what chat and completions share ---------------------------------------------------

ModelName = Annotated[str, Field(min_length=1, description="The id of a model in the registry.")]
TokenIds = list[Annotated[int, Field(ge=0)]]


class StreamOptions(_Body):
    include_usage: bool = False


class LoraAdapter(_Body):
    """llama.cpp server's per-request adapter; here `id` is the adapter's model id."""

    id: str = Field(min_length=1, description="An adapter's model id (fine-tuning's, kind adapter) "
                                              "trained on the requested model.")
    scale: float = Field(1.0, ge=-8, le=8)


class _Generate(_Body):
    model: ModelName
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0, le=1 << 20, description="llama.cpp's top-k; 0 is off.")
    min_p: Optional[float] = Field(None, ge=0, le=1, description="llama.cpp's min-p; 0 is off.")
    repeat_penalty: Optional[float] = Field(None, ge=0, le=10, description="llama.cpp's repetition penalty.")
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    seed: Optional[int] = None
    logit_bias: Optional[dict[str, float]] = Field(None, description="Token id (as a string) to a bias.")
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, Annotated[list[str], Field(max_length=MAX_STOPS)], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    lora: Optional[Annotated[list[LoraAdapter], Field(max_length=8)]] = Field(
        None, description="LoRA adapters on the model for this request, as llama.cpp's server takes them.")

    @model_validator(mode="after")
    def _bias_keys_are_token_ids(self):
        for key in self.logit_bias or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError("'logit_bias' must map token ids to numbers")
        return self

    def generate_fields(self) -> dict:
        sampling = SamplingParams(
            temperature=_or(self.temperature, 1.0), top_p=_or(self.top_p, 1.0), top_k=_or(self.top_k, 0),
            min_p=_or(self.min_p, 0.0), seed=self.seed, repeat_penalty=_or(self.repeat_penalty, 1.0),
            presence_penalty=_or(self.presence_penalty, 0.0), frequency_penalty=_or(self.frequency_penalty, 0.0),
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()},
        )
        stop = [self.stop] if isinstance(self.stop, str) else [s for s in self.stop or [] if s]
        return dict(model=self.model, sampling=sampling, stop=stop, stream=self.stream,
                    max_tokens=self.max_completion_tokens or self.max_tokens,
                    include_usage=bool(self.stream_options and self.stream_options.include_usage),
                    n=self.n, logprobs=None, lora=[(a.id, a.scale) for a in self.lora or []])


def _or(value, default):
    return default if value is None else value


# ---- chat ------------------------------------------------------------------------------

class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageUrl(_Body):
    url: str = Field(description="A data URI (data:image/png;base64,...); URLs are not fetched.")
    detail: Optional[str] = None


class ImageUrlPart(_Body):
    type: Literal["image_url"]
    image_url: Union[ImageUrl, str]


ContentPart = Annotated[Union[TextPart, ImageUrlPart], Field(discriminator="type")]


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal[ROLES]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None

    @model_validator(mode="after")
    def _has_content(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("a message needs content (an assistant's may have tool_calls instead)")
        return self


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = Field(None, description="A JSON schema of the arguments.")


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[dict[str, Any]] = Field(None, description="{name, schema, strict}")


class ChatCompletionBody(_Generate):
    """POST /v1/chat/completions."""

    messages: Annotated[list[Message], Field(min_length=1)]
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    response_format: Optional[ResponseFormat] = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("'top_logprobs' needs 'logprobs': true")
        names = {t.function.name for t in self.tools or []}
        if self.tool_choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs 'tools'")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names function {self.tool_choice.function.name!r}, "
                             "which is not in 'tools'")
        return self


class CompletionBody(_Generate):
    """POST /v1/completions."""

    prompt: Union[str, Annotated[list[str], Field(min_length=1)], Annotated[TokenIds, Field(min_length=1)],
                  Annotated[list[Annotated[TokenIds, Field(min_length=1)]], Field(min_length=1)]]
    echo: bool = False
    logprobs: Union[Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)], Literal[False], None] = None

    @model_validator(mode="after")
    def _at_most_16(self):
        if self._prompt_count() * self.n > MAX_CHOICES:
            raise ValueError(f"at most {MAX_CHOICES} completions per request (prompts times n)")
        return self

    def _prompt_count(self) -> int:
        p = self.prompt
        return 1 if isinstance(p, str) or (p and isinstance(p[0], int)) else len(p)


class EmbeddingBody(_Body):
    """POST /v1/embeddings."""

    model: ModelName
    input: Union[Annotated[str, Field(min_length=1)], Annotated[TokenIds, Field(min_length=1)],
                 Annotated[list[Union[Annotated[str, Field(min_length=1)], Annotated[TokenIds, Field(min_length=1)]]],
                           Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]]
    encoding_format: Optional[Literal["float", "base64"]] = None
    dimensions: Optional[int] = Field(None, ge=1)


class LoadModelBody(_Body):
    """POST /v1/models: load a model now."""

    model: ModelName


# ---- into the engines' requests --------------------------------------------------------

def _validate(model: type[BaseModel], body: dict):
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise RequestError(describe(exc)) from None


def parse_chat(body: dict) -> ChatRequest:
    b: ChatCompletionBody = _validate(ChatCompletionBody, body)
    fields = b.generate_fields()
    if b.logprobs:
        fields["logprobs"] = b.top_logprobs or 0
    messages, images = _messages(b.messages)
    tools = [t.model_dump(exclude_none=True) for t in b.tools] if b.tools else None
    if b.tool_choice is None:
        choice = "auto" if tools else "none"
    elif isinstance(b.tool_choice, NamedToolChoice):
        choice = {"name": b.tool_choice.function.name}
    else:
        choice = b.tool_choice
    rf = b.response_format.model_dump(exclude_none=True) if b.response_format else None
    return ChatRequest(**fields, messages=messages, images=images, tools=tools,
                       tool_choice=choice, response_format=rf)


def parse_completion(body: dict) -> CompletionRequest:
    b: CompletionBody = _validate(CompletionBody, body)
    fields = b.generate_fields()
    if b.logprobs is not None and b.logprobs is not False:
        fields["logprobs"] = b.logprobs
    p = b.prompt
    prompts = [p] if isinstance(p, str) or isinstance(p[0], int) else list(p)
    return CompletionRequest(**fields, prompts=prompts, echo=b.echo)


def parse_embeddings(body: dict) -> EmbeddingRequest:
    b: EmbeddingBody = _validate(EmbeddingBody, body)
    x = b.input
    inputs = [x] if isinstance(x, str) or isinstance(x[0], int) else list(x)
    return EmbeddingRequest(model=b.model, inputs=inputs, encoding_format=b.encoding_format or "float",
                            dimensions=b.dimensions)


def _messages(raw: list[Message]) -> tuple[list[dict], list[ImagePart]]:
    out, images = [], []
    for i, m in enumerate(raw):
        role = "system" if m.role == "developer" else m.role
        content, imgs = _content(m.content, i)
        images += imgs
        msg = {"role": role, "content": content}
        if role == "assistant" and m.tool_calls:
            msg["tool_calls"] = [c.model_dump(exclude_none=True) for c in m.tool_calls]
        if role == "tool":
            msg["tool_call_id"] = m.tool_call_id
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out, images


def _content(c, i) -> tuple[str | None, list[ImagePart]]:
    if c is None or isinstance(c, str):
        return c, []
    texts, images = [], []
    for j, part in enumerate(c):
        if isinstance(part, TextPart):
            texts.append(part.text)
        else:
            url = part.image_url.url if isinstance(part.image_url, ImageUrl) else part.image_url
            where = f"messages[{i}].content[{j}]"
            images.append(ImagePart(decode_data_uri(url, where), where))
            texts.append(IMAGE_MARKER)
    return "".join(texts) if len(texts) != 1 else texts[0], images


def decode_data_uri(url, where: str) -> bytes:
    try:
        return image_data.decode_data_uri(url, where)
    except image_data.ImageError as exc:
        raise RequestError(str(exc)) from None


# ---- responses (for the OpenAPI document) ----------------------------------------------

class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: Optional[dict[str, int]] = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: Optional[str]
    tool_calls: Optional[list[dict[str, Any]]] = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: Optional[dict[str, Any]]
    finish_reason: Optional[str]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[dict[str, Any]]
    finish_reason: Optional[str]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str] = Field(description="Floats, or base64 of little-endian float32.")


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelEntryList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"]
    deleted: bool
