"""What the engines are asked to do, whichever API asked: typed requests, no HTTP.

Each API family turns its own request bodies into these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.server.inference.llama.sampling import SamplingParams

class RequestError(ValueError):
    """A request that is wrong, whichever API sent it; the message says how (a 400)."""


# Where an image goes in the text; the vlm engine replaces it with the image's embeddings.
IMAGE_MARKER = "<__media__>"


@dataclass
class Generate:
    """What chat/completions and completions share."""

    model: str
    sampling: SamplingParams
    max_tokens: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    logprobs: int | None  # None, or how many top alternatives
    n: int = 1
    # Cut a max_tokens that the context cannot hold to what it can, rather than refuse it:
    # Anthropic clients must send max_tokens, and send the large ones their API allows.
    fit_max_tokens: bool = False
    # The scheduler admits higher first, and lets priority > 0 take its priority slot
    # (scheduler.PRIORITY_SLOTS): for latency-bound requests such as inline suggestions.
    priority: int = 0
    # LoRA adapters on the base (model ids of kind adapter, with their scales): llama.cpp
    # server's per-request `lora`. Naming an adapter as `model` adds it with scale 1.
    lora: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class ImagePart:
    data: bytes
    where: str  # the request part it came from, e.g. messages[0].content[1], for messages


@dataclass
class ChatRequest(Generate):
    messages: list[dict] = field(default_factory=list)
    images: list[ImagePart] = field(default_factory=list)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None  # "none" | "auto" | "required" | function name
    response_format: dict | None = None


@dataclass
class CompletionRequest(Generate):
    prompts: list = field(default_factory=list)  # each a string or a list of token ids
    echo: bool = False


@dataclass
class EmbeddingRequest:
    model: str
    inputs: list  # each a string or a list of token ids
    encoding_format: str = "float"
    dimensions: int | None = None
