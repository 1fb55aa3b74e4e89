"""Silicon Studio's engine API bodies (its "Engine / Models API" document), declared as pydantic models, and their
translation into the engines' typed requests.

Unknown fields are ignored, as the app's own FastAPI backend ignores them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

from modelyard.server.inference import images as image_data
from modelyard.server.inference.llama.sampling import SamplingParams
from modelyard.server.inference.requests import IMAGE_MARKER, ChatRequest, CompletionRequest, ImagePart, RequestError

MAX_IMAGE_BYTES = 20 * 1000 * 1000  # "Images must be under 20 MB"
# Predict (inline suggestions): the scheduler's priority; chats have 0.
PREDICT_PRIORITY = 10


class ImageTooLarge(RequestError):
    """An image over MAX_IMAGE_BYTES: a 413."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


ModelIdField = Field(description="The model's id, as GET /api/engine/models lists it.",
                     examples=["smollm2-360m"], min_length=1)


class SiliconModelRef(_Body):
    model_id: str = ModelIdField


class SiliconDownloadBody(_Body):
    model_id: str = Field(description="A Hugging Face repo, `org/repo` (the GGUF of a sensible "
                                      "quantization: Q4_K_M first), or `org/repo/file.gguf`.",
                          examples=["bartowski/SmolLM2-360M-Instruct-GGUF"], min_length=1)


class SiliconRegisterBody(_Body):
    name: str = Field(min_length=1, description="The model's display name; its id is made from it.")
    path: str = Field(min_length=1, description="An absolute path: a GGUF file, or a folder holding one "
                                                "and its mmproj projector. Registered where it lies.")
    url: Optional[str] = Field(None, description="Where the model came from (kept, shown in the list).")


class SiliconScanBody(_Body):
    path: str = Field(min_length=1, description="An absolute folder path, scanned recursively.")


class SiliconLoadBody(SiliconModelRef):
    kv_quantization: Optional[Literal[4, 8]] = Field(
        None, description="Quantize the KV cache: 8 (q8_0) or 4 (q4_0); omitted: none (f16).")


class SiliconUnloadBody(_Body):
    model_id: Optional[str] = Field(None, description="The model to unload; the active one when absent.")


class SiliconStopBody(_Body):
    model_id: Optional[str] = Field(None, description="Stop only this model's chats; all when absent.")


class SiliconTextPart(_Body):
    type: Literal["text"]
    text: str


class SiliconImageUrl(_Body):
    url: str = Field(description="A data URI (data:image/png;base64,...); URLs are not fetched.")


class SiliconImageUrlPart(_Body):
    type: Literal["image_url"]
    image_url: Union[SiliconImageUrl, str]


SiliconContentPart = Annotated[Union[SiliconTextPart, SiliconImageUrlPart], Field(discriminator="type")]


class SiliconMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[SiliconContentPart]]


class SiliconChatBody(SiliconModelRef):
    messages: list[SiliconMessage] = Field(min_length=1)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(512, ge=1)
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.1, gt=0)
    seed: Optional[int] = None

    def request(self) -> ChatRequest:
        messages, images = [], []
        for i, m in enumerate(self.messages):
            text, imgs = _content(m.content, i)
            messages.append({"role": m.role, "content": text})
            images += imgs
        sampling = SamplingParams(temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                                  repeat_penalty=self.repetition_penalty)
        # fit_max_tokens: the app sends its default of 512 whatever the model's context.
        return ChatRequest(model=self.model_id, sampling=sampling, max_tokens=self.max_tokens, stop=[],
                           stream=True, include_usage=True, logprobs=None, fit_max_tokens=True,
                           messages=messages, images=images)


class SiliconPredictBody(SiliconModelRef):
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(50, ge=1)

    def request(self) -> CompletionRequest:
        # Greedy: a suggestion should be the model's best guess, and the same each time.
        return CompletionRequest(model=self.model_id, sampling=SamplingParams(temperature=0.0),
                                 max_tokens=self.max_tokens, stop=[], stream=False,
                                 include_usage=False, logprobs=None, fit_max_tokens=True,
                                 priority=PREDICT_PRIORITY, prompts=[self.prompt])


def _content(content, i: int) -> tuple[str, list[ImagePart]]:
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for j, part in enumerate(content):
        if isinstance(part, SiliconTextPart):
            texts.append(part.text)
            continue
        url = part.image_url.url if isinstance(part.image_url, SiliconImageUrl) else part.image_url
        where = f"messages[{i}].content[{j}]"
        try:
            data = image_data.decode_data_uri(url, where)
        except image_data.ImageError as exc:
            raise RequestError(str(exc)) from None
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageTooLarge(f"{where}: the image is {len(data)} bytes; images must be under "
                                f"{MAX_IMAGE_BYTES // 1000000} MB")
        images.append(ImagePart(data, where))
        texts.append(IMAGE_MARKER)
    return "".join(texts), images


# ---- responses (for the OpenAPI document) ----------------------------------------------

class SiliconProgress(BaseModel):
    downloaded: int
    total: Optional[int] = None
    percent: Optional[float] = None


class SiliconModel(BaseModel):
    """A model as the engine API lists it."""

    id: str
    name: str
    path: Optional[str] = Field(None, description="The model's file on disk.")
    size: Optional[int] = Field(None, description="Bytes on disk (the projector included).")
    kind: Optional[str] = None
    status: Literal["ready", "downloading", "failed", "not_ready"]
    downloaded: bool = Field(description="True once its files are complete and verified.")
    is_vision: bool
    is_custom: bool = Field(description="Registered by path: deleting it leaves the file.")
    is_finetuned: bool = False
    is_loaded: bool = False
    url: Optional[str] = None
    progress: Optional[SiliconProgress] = None
    error: Optional[str] = Field(None, description="Why a download failed, or why the model is not ready.")


class SiliconModelListOut(RootModel[list[SiliconModel]]):
    """Every model: those in the store (GGUF), and downloads that have not reached it."""


class SiliconScanOut(BaseModel):
    registered: list[SiliconModel]
    skipped: list[dict[str, str]] = Field(description="{path, reason} of each file not registered.")


class SiliconActiveModel(BaseModel):
    id: str
    name: str
    size: Optional[int] = None
    path: Optional[str] = None
    architecture: Optional[str] = None
    context_window: Optional[int] = None
    is_vision: bool


class SiliconActiveOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Optional[SiliconActiveModel] = Field(description="The active model, or null; its fields are also "
                                                     "at the top level when there is one.")


class SiliconLoadOut(BaseModel):
    status: Literal["loaded"]
    model_id: str
    context_window: int
    architecture: Optional[str] = None
    kv_cache_type: Optional[str] = None


class SiliconAdapterList(RootModel[list[SiliconModel]]):
    """Fine-tuned models: none until fine-tuning is served."""


class SiliconStatusOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: str


class SiliconFormatOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_type: Optional[str] = None
    has_chat_template: bool
    eos_token: Optional[str] = None
    bos_token: Optional[str] = None
    pad_token: Optional[str] = None
    chat_template: Optional[str] = None


class SiliconChatEvent(BaseModel):
    """One SSE event: {"text"} while generating, then {"done": true, "usage", "stopped"}."""

    text: Optional[str] = None
    done: Optional[bool] = None
    stopped: Optional[bool] = None
    finish_reason: Optional[str] = None
    usage: Optional[dict[str, Any]] = None
    error: Optional[str] = None


class SiliconPredictOut(BaseModel):
    text: str
