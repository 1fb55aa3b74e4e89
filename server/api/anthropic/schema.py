"""The Anthropic Messages API's request bodies, declared as pydantic models, and their
translation into the engines' typed ChatRequest.

Unknown fields are ignored (`cache_control`, `citations`, `service_tier`, `container`,
...: they mean nothing to a local model); known ones are checked strictly. Content
blocks that this server cannot honour (documents, server tools, images by URL) are a
400 that says so, not silently dropped. Pure: nothing here touches a model; a request
that is wrong raises the 400 (ApiError) that says how.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelyard.server.http.bodies import validate
from modelyard.server.http.errors import bad_request
from modelyard.server.inference import images as image_data
from modelyard.server.inference.llama.sampling import SamplingParams
from modelyard.server.inference.requests import IMAGE_MARKER, ChatRequest, ImagePart

MAX_STOPS = 16


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


# ---- content blocks --------------------------------------------------------------------

class TextBlock(_Body):
    type: Literal["text"]
    text: str


class Base64Source(_Body):
    type: Literal["base64"]
    media_type: str = Field(description="image/png, image/jpeg, image/gif or image/webp.")
    data: str = Field(description="The image, base64.")


class ElsewhereSource(_Body):
    """An image by URL or by file id: refused (this server fetches nothing)."""

    type: Literal["url", "file"]


class ImageBlock(_Body):
    type: Literal["image"]
    source: Annotated[Union[Base64Source, ElsewhereSource], Field(discriminator="type")]


class ToolUseBlock(_Body):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Body):
    type: Literal["tool_result"]
    tool_use_id: str
    content: Union[str, list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]], None] = None
    is_error: bool = False


class ThinkingBlock(_Body):
    """An earlier answer's reasoning, sent back: not put into the prompt (Anthropic's API
    also leaves earlier turns' thinking out)."""

    type: Literal["thinking", "redacted_thinking"]


Block = Annotated[Union[TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock],
                  Field(discriminator="type")]


BLOCK_TYPES = ("text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking")


class InputMessage(_Body):
    # A system turn among the messages is rendered where it stands: Claude Code's first
    # request of a run sends [user, system].
    role: Literal["user", "assistant", "system"]
    content: Union[str, list[Block]]

    @model_validator(mode="before")
    @classmethod
    def _known_blocks(cls, data):
        # Said here, by name: a union's own message would be about the string form.
        content = data.get("content") if isinstance(data, dict) else None
        for j, b in enumerate(content if isinstance(content, list) else []):
            kind = b.get("type") if isinstance(b, dict) else None
            if isinstance(kind, str) and kind not in BLOCK_TYPES:
                raise ValueError(f"content[{j}]: '{kind}' blocks are not supported here; "
                                 f"send {', '.join(BLOCK_TYPES)} blocks")
        return data

    @model_validator(mode="after")
    def _blocks_fit_the_role(self):
        if isinstance(self.content, str):
            return self
        for j, b in enumerate(self.content):
            if self.role == "user" and b.type in ("tool_use", "thinking", "redacted_thinking"):
                raise ValueError(f"content[{j}]: a user message cannot hold a {b.type} block")
            if self.role == "assistant" and b.type in ("tool_result", "image"):
                raise ValueError(f"content[{j}]: an assistant message cannot hold a {b.type} block")
            if self.role == "system" and b.type != "text":
                raise ValueError(f"content[{j}]: a system message holds text blocks only, not {b.type}")
        return self


# ---- tools, thinking, output -----------------------------------------------------------

class CustomTool(_Body):
    type: Optional[Literal["custom"]] = Field(
        None, description="Only custom tools; Anthropic's server tools (web search, ...) are not served here.")
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: Optional[str] = None
    input_schema: dict[str, Any] = Field(description="A JSON schema of the tool's input.")


class ToolChoiceAuto(_Body):
    type: Literal["auto"]
    disable_parallel_tool_use: Optional[bool] = None


class ToolChoiceAny(_Body):
    type: Literal["any"]
    disable_parallel_tool_use: Optional[bool] = None


class ToolChoiceTool(_Body):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: Optional[bool] = None


class ToolChoiceNone(_Body):
    type: Literal["none"]


ToolChoice = Annotated[Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone],
                       Field(discriminator="type")]


class ThinkingEnabled(_Body):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1, description="Accepted; the answer's thinking counts against max_tokens.")


class ThinkingOther(_Body):
    type: Literal["disabled", "adaptive"]


class JsonOutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    format: Optional[JsonOutputFormat] = None
    effort: Optional[str] = Field(None, description="Accepted and ignored.")


class Metadata(_Body):
    user_id: Optional[str] = None


# ---- the requests ----------------------------------------------------------------------

ModelName = Annotated[str, Field(min_length=1, description="The id of a model in the registry.")]
System = Union[str, list[TextBlock]]


class _Prompted(_Body):
    """What /v1/messages and /v1/messages/count_tokens share: everything that makes the prompt."""

    model: ModelName
    messages: Annotated[list[InputMessage], Field(min_length=1)]
    system: Optional[System] = None
    tools: Optional[list[CustomTool]] = None
    tool_choice: Optional[ToolChoice] = None
    thinking: Optional[Annotated[Union[ThinkingEnabled, ThinkingOther], Field(discriminator="type")]] = None

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self):
        names = [t.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        if isinstance(self.tool_choice, (ToolChoiceAny, ToolChoiceTool)) and not names:
            raise ValueError(f"tool_choice '{self.tool_choice.type}' needs 'tools'")
        if isinstance(self.tool_choice, ToolChoiceTool) and self.tool_choice.name not in names:
            raise ValueError(f"tool_choice names tool {self.tool_choice.name!r}, which is not in 'tools'")
        return self


class MessagesBody(_Prompted):
    """POST /v1/messages."""

    max_tokens: int = Field(ge=1, description="Cut to what the model's context leaves, if larger.")
    stop_sequences: Optional[Annotated[list[str], Field(max_length=MAX_STOPS)]] = None
    temperature: Optional[float] = Field(None, ge=0, le=1)
    top_p: Optional[float] = Field(None, ge=0, le=1)
    top_k: Optional[int] = Field(None, ge=0, le=1 << 20)
    stream: bool = False
    metadata: Optional[Metadata] = None
    output_config: Optional[OutputConfig] = None


class CountTokensBody(_Prompted):
    """POST /v1/messages/count_tokens."""


# ---- into the engines' request ---------------------------------------------------------

def thinking_on(b: _Prompted) -> bool:
    return b.thinking is not None and b.thinking.type != "disabled"


def parse_messages(body: dict) -> tuple[MessagesBody, ChatRequest]:
    b: MessagesBody = validate(MessagesBody, body)
    sampling = SamplingParams(temperature=1.0 if b.temperature is None else b.temperature,
                              top_p=1.0 if b.top_p is None else b.top_p, top_k=b.top_k or 0)
    rf = None
    if b.output_config and b.output_config.format:
        rf = {"type": "json_schema", "json_schema": {"schema": b.output_config.format.schema_}}
    return b, _chat_request(b, sampling=sampling, max_tokens=b.max_tokens, fit_max_tokens=True,
                            stop=[s for s in b.stop_sequences or [] if s], stream=b.stream, response_format=rf)


def parse_count_tokens(body: dict) -> ChatRequest:
    b: CountTokensBody = validate(CountTokensBody, body)
    return _chat_request(b, sampling=SamplingParams(), max_tokens=None, stop=[], stream=False)


def _chat_request(b: _Prompted, **generate) -> ChatRequest:
    messages, images = conversation(b.system, b.messages)
    tools = [openai_tool(t) for t in b.tools] if b.tools else None
    return ChatRequest(model=b.model, include_usage=False, logprobs=None, messages=messages, images=images,
                       tools=tools, tool_choice=tool_choice(b.tool_choice, bool(tools)), **generate)


def openai_tool(t: CustomTool) -> dict:
    """A tool as the engines take it (OpenAI's function form)."""
    fn = {"name": t.name, "parameters": t.input_schema}
    if t.description:
        fn["description"] = t.description
    return {"type": "function", "function": fn}


def tool_choice(choice, have_tools: bool) -> str | dict:
    """Anthropic's tool_choice as ChatRequest's: auto, none, required (any), or one tool's name."""
    if choice is None:
        return "auto" if have_tools else "none"
    if isinstance(choice, ToolChoiceTool):
        return {"name": choice.name}
    return {"any": "required"}.get(choice.type, choice.type)


def conversation(system: System | None, raw: list[InputMessage]) -> tuple[list[dict], list[ImagePart]]:
    """Anthropic's system and messages as chat messages (OpenAI's roles), and their images
    in the order their markers stand in the text.

    A user message's tool_result blocks become `tool` messages where they stand; its text
    and images around them stay user messages. An assistant's tool_use blocks become its
    tool_calls. A system message among them stays a system message where it stands."""
    out: list[dict] = []
    images: list[ImagePart] = []
    if system:
        out.append({"role": "system", "content": _system_text(system)})
    for i, m in enumerate(raw):
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        if m.role == "system":
            out.append({"role": "system", "content": _system_text(m.content)})
            continue
        if m.role == "assistant":
            out.append(_assistant(m.content))
            continue
        texts: list[str] = []
        for j, block in enumerate(m.content):
            where = f"messages[{i}].content[{j}]"
            if isinstance(block, ToolResultBlock):
                if texts:
                    out.append({"role": "user", "content": "".join(texts)})
                    texts = []
                out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "content": _tool_result_text(block, where, images)})
            else:
                texts.append(_text_or_marker(block, where, images))
        if texts or not out or out[-1]["role"] != "tool":
            out.append({"role": "user", "content": "".join(texts)})
    return out, images


def _system_text(system: System) -> str:
    return system if isinstance(system, str) else "\n".join(b.text for b in system)


def _assistant(blocks: list) -> dict:
    text = "".join(b.text for b in blocks if isinstance(b, TextBlock))
    calls = [{"id": b.id, "type": "function",
              "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}}
             for b in blocks if isinstance(b, ToolUseBlock)]
    msg: dict = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_result_text(block: ToolResultBlock, where: str, images: list[ImagePart]) -> str:
    c = block.content
    if c is None or isinstance(c, str):
        text = c or ""
    else:
        text = "".join(_text_or_marker(part, f"{where}.content[{k}]", images)
                       for k, part in enumerate(c))
    return f"Error: {text}" if block.is_error else text


def _text_or_marker(block, where: str, images: list[ImagePart]) -> str:
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, ImageBlock):
        images.append(ImagePart(decode_image(block.source, where), where))
        return IMAGE_MARKER
    raise bad_request(f"{where}: a {block.type} block cannot stand here")  # the validator keeps this out


def decode_image(source, where: str) -> bytes:
    if not isinstance(source, Base64Source):
        raise bad_request(f"{where}: images must be sent as base64 (source.type 'base64'); "
                           "this server does not fetch URLs or files")
    try:
        return image_data.decode_base64(source.data, where)
    except image_data.ImageError as exc:
        raise bad_request(str(exc)) from None


# ---- responses (for the OpenAPI document) ----------------------------------------------

class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: Optional[int] = None
    cache_read_input_tokens: Optional[int] = None


class MessageOut(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]] = Field(description="text, thinking and tool_use blocks.")
    stop_reason: Optional[Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]]
    stop_sequence: Optional[str]
    usage: MessageUsage


class TokenCount(BaseModel):
    input_tokens: int
