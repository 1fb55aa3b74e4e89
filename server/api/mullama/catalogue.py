"""The defaults catalogue (GET /api/defaults) and what a pull's `name` means. Pure: no I/O.

The catalogue is a static table of small GGUF models that are useful on a laptop's CPU,
each from a Hugging Face repo that holds it in several quantizations. A pull takes the
quantization named here (hub.pick_gguf matches it in the file names), so an entry names no
file that a repo might rename. Capabilities say what the model's own chat template and
weights support: tools where the template renders them, thinking where the model writes
<think> blocks, vision where the repo has a projector.
"""
from __future__ import annotations

from dataclasses import dataclass

from modelyard.server.shared import names


@dataclass(frozen=True)
class Default:
    name: str  # also the registry id it is pulled into
    description: str
    size_hint: str
    tags: tuple[str, ...]
    repo: str
    quant: str
    kind: str  # llm, vlm or embed
    has_thinking: bool = False
    has_vision: bool = False
    has_tools: bool = False

    def entry(self) -> dict:
        return {"name": self.name, "description": self.description, "size_hint": self.size_hint,
                "tags": list(self.tags), "from": f"hf:{self.repo}", "quantization": self.quant,
                "kind": self.kind, "has_thinking": self.has_thinking, "has_vision": self.has_vision,
                "has_tools": self.has_tools}


DEFAULTS: tuple[Default, ...] = (
    Default("qwen2.5-0.5b", "Qwen2.5 0.5B Instruct - the smallest useful chat model, multilingual",
            "0.5B", ("chat", "instruct", "fast", "lightweight", "tools"),
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M", "llm", has_tools=True),
    Default("qwen2.5-1.5b", "Qwen2.5 1.5B Instruct - chat, tool calls and JSON at a small size",
            "1.5B", ("chat", "instruct", "tools", "json"),
            "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "Q4_K_M", "llm", has_tools=True),
    Default("llama3.2-1b", "Meta Llama 3.2 1B Instruct - fast and lightweight",
            "1B", ("chat", "instruct", "fast", "lightweight"),
            "bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M", "llm", has_tools=True),
    Default("smollm2-360m", "SmolLM2 360M Instruct - a tiny English chat model",
            "360M", ("chat", "instruct", "tiny"),
            "lmstudio-community/SmolLM2-360M-Instruct-GGUF", "Q8_0", "llm"),
    Default("qwen3-0.6b", "Qwen3 0.6B - small reasoning model with thinking and tool calls",
            "0.6B", ("chat", "reasoning", "thinking", "tools"),
            "Qwen/Qwen3-0.6B-GGUF", "Q8_0", "llm", has_thinking=True, has_tools=True),
    Default("deepseek-r1-1.5b", "DeepSeek R1 Distill Qwen 1.5B - chain-of-thought reasoning",
            "1.5B", ("reasoning", "thinking", "chain-of-thought"),
            "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF", "Q4_K_M", "llm", has_thinking=True),
    Default("smolvlm-500m", "SmolVLM 500M Instruct - describes images, with its projector",
            "500M", ("vision", "multimodal", "small"),
            "ggml-org/SmolVLM-500M-Instruct-GGUF", "Q8_0", "vlm", has_vision=True),
    Default("nomic-embed-text", "Nomic Embed Text v1.5 - text embeddings (768 dimensions)",
            "137M", ("embedding", "search", "rag"),
            "nomic-ai/nomic-embed-text-v1.5-GGUF", "Q4_K_M", "embed"),
)
BY_NAME = {d.name: d for d in DEFAULTS}


@dataclass(frozen=True)
class Spec:
    """What a pull fetches: a repo, and a file of it or a quantization, into a model id."""

    model_id: str
    repo: str
    quant: str | None = None
    filename: str | None = None


class SpecError(ValueError):
    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


def parse_spec(name: str) -> Spec:
    """A catalogue name, or `hf:org/repo[:file or quantization]`.

    `hf:org/repo` is the model `hf.co/org/repo` (the Ollama name of the same pull);
    `:x.gguf` names the file, and its stem becomes the tag; any other `:x` is a quantization."""
    name = name.strip()
    if name in BY_NAME:
        d = BY_NAME[name]
        return Spec(d.name, d.repo, quant=d.quant)
    if not name.startswith("hf:"):
        raise SpecError(f"'{name}' is not in the defaults catalogue (GET /api/defaults lists it) "
                        "and is not a Hugging Face spec (hf:org/repo[:file])", code=404)
    repo, _, selector = name[3:].partition(":")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise SpecError(f"'{name}' is not hf:org/repo[:file]")
    if selector.lower().endswith(".gguf"):
        stem = selector.rsplit("/", 1)[-1][:-len(".gguf")]
        return Spec(names.to_id(f"hf.co/{repo}:{stem}"), repo, filename=selector)
    tag = f":{selector}" if selector else ""
    return Spec(names.to_id(f"hf.co/{repo}{tag}"), repo, quant=selector or None)


def alias(model_id: str) -> str:
    """How Mullama's routes show a model: its Ollama name, without the implied `:latest`."""
    return names.short_name(model_id)


class PullProgress:
    """Turns a pull's Ollama events (pulls.pull) into Mullama's NDJSON lines: one byte count
    over all the pull's files, then `verifying`, then `success` with the model's alias."""

    def __init__(self, model: str, sizes: dict[str, int | None]):
        self.model = model
        self.total = sum(s for s in sizes.values() if s) or None
        self.done: dict[str, int] = {}

    def line(self, event: dict) -> dict | None:
        status = event.get("status")
        if status == "downloading":
            self.done[event["digest"]] = event.get("completed") or 0
            downloaded = sum(self.done.values())
            total = self.total or event.get("total")
            progress = min(downloaded / total, 1.0) if total else 0.0
            return {"status": "downloading", "progress": round(progress, 4), "total_bytes": total,
                    "downloaded_bytes": downloaded}
        if status == "verifying sha256 digest":
            return {"status": "verifying"}
        if status == "success":
            return {"status": "success", "model": self.model}
        return None  # Ollama's "pulling manifest", "writing manifest"


def capabilities(kind: str, chat_template: str) -> dict:
    """Mullama's capability flags of a model, from its kind and its GGUF's chat template."""
    generative = kind in ("llm", "vlm")
    return {"vision": kind == "vlm", "tools": generative and "tools" in chat_template,
            "thinking": generative and "<think>" in chat_template,
            # any generative model: the engine holds its output to a JSON grammar
            "json": generative}
