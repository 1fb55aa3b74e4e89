"""One typed settings object for the server, with MODELYARD_* environment overrides."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from modelyard.server.shared import environ as environ_reader
from modelyard.server.shared.facts import DEFAULT_PARALLEL, DEFAULT_PORT

DEFAULT_HOST = "127.0.0.1"
# Generous for JSON bodies (chat histories with data-URI images), far below a model file.
DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024
DEFAULT_MAX_UPLOAD_SIZE = 256 * 1024**3
DEFAULT_HTTP_THREADS = 64


def default_store() -> Path:
    """A per-user data directory, so `modelyard serve` works with no flags."""
    return Path(platformdirs.user_data_dir("modelyard")) / "store"


@dataclass
class Settings:
    """Everything `modelyard serve` can be told. Each field has a MODELYARD_<NAME> variable."""

    host: str = field(default=DEFAULT_HOST, metadata={"help": "address to listen on"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "port to listen on"})
    store: Path = field(default_factory=default_store, metadata={"help": "model store directory"})
    api_key: str | None = field(
        default=None,
        metadata={"help": "Bearer key for mutations and inference; required off loopback"},
    )
    preload: list[str] = field(
        default_factory=list,
        metadata={"help": "model ids to load at start; /readyz waits for them (repeatable)"},
    )
    parallel: int = field(default=DEFAULT_PARALLEL, metadata={"help": "decode slots per GGUF model"})
    threads: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "CPU threads for llama.cpp"},
    )
    engine_hang_timeout: float = field(
        default=300.0,
        metadata={"help": "seconds a model's engine may make no progress while work is queued "
                          "before its runner process is killed and restarted"},
    )
    ollama_registry: str = field(
        default="registry.ollama.ai",
        metadata={"help": "registry host[:port] that short names (llama3.2:1b) pull from and push to"},
    )
    allow_fetch: list[str] = field(
        default_factory=list,
        metadata={"help": "hosts or address ranges (CIDR) the server's own fetches (pulls, pushes, "
                          "downloads, the hub) may reach besides public addresses, which are all "
                          "it reaches by default; e.g. registry.internal, 10.0.0.0/8 (repeatable)"},
    )
    cors_origins: list[str] = field(
        default_factory=list,
        metadata={"help": "origins browser apps may call from, besides the machine's own (localhost); "
                          "scheme://host[:port], a port or host may be *; '*' allows any (repeatable)"},
    )
    allowed_hosts: list[str] = field(
        default_factory=list,
        metadata={"help": "host names a server without an API key answers besides localhost and loopback "
                          "addresses (a guard against DNS rebinding); with a key any Host is served (repeatable)"},
    )
    keepalive_seconds: float = field(
        default=10.0,
        metadata={"help": "seconds between keep-alives on a stream that waits for a slot or its prompt "
                          "(each API's own: an SSE comment or ping event, an empty NDJSON chunk)"},
    )
    http_threads: int = field(
        default=DEFAULT_HTTP_THREADS, metadata={"help": "gunicorn gthread threads"}
    )
    max_body_size: int = field(
        default=DEFAULT_MAX_BODY_SIZE, metadata={"help": "largest JSON body, in bytes (413 above)"}
    )
    max_upload_size: int = field(
        default=DEFAULT_MAX_UPLOAD_SIZE, metadata={"help": "largest upload, in bytes (413 above)"}
    )
    allowed_paths: list[str] | None = field(
        default=None,
        metadata={"type": list, "help": "folders whose files path-taking routes (Silicon's register and scan, "
                                        "Mullama's load by path) may name; 'none' for no folder; default: the "
                                        "store and the usual model folders (~/models, ~/.cache/huggingface, "
                                        "~/.ollama/models, ~/.lmstudio/models...), none in a Kubernetes pod "
                                        "(repeatable)"},
    )
    # Serving fields of the preloaded models. In a cluster the store is a read-only
    # cache, so the operator passes a Model's serving fields this way: they override
    # the registry's gguf/onnx values without rewriting the store.
    init_context_size: int | None = field(
        default=None, metadata={"type": int, "help": "context size for the preloaded models (overrides gguf.initContextSize)"}
    )
    init_gpu_layer_size: int | None = field(
        default=None, metadata={"type": int, "help": "GPU layers for the preloaded models (overrides gguf.initGpuLayerSize)"}
    )
    chat_template_hint: str | None = field(
        default=None, metadata={"help": "chat template for the preloaded models (overrides gguf.chatTemplateHint)"}
    )
    execution_provider: str | None = field(
        default=None, metadata={"help": "ONNX provider for the preloaded models (overrides onnx.executionProvider)"}
    )
    kv_cache_type: str | None = field(
        default=None, metadata={"help": "KV cache type (f16, q8_0, q4_0) for the preloaded llm and vlm models "
                                        "(overrides gguf.kvCacheType)"}
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then MODELYARD_* variables, then explicit overrides (CLI flags)."""
        values = environ_reader.read(cls, environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "store" in values:
            values["store"] = Path(values["store"]).expanduser()
        return cls(**values)

    def loopback_only(self) -> bool:
        return is_loopback(self.host)

    def overrides_for(self, model_id: str) -> dict:
        """{"gguf": {...}, "onnx": {...}} to lay over a preloaded model's metadata."""
        if model_id not in self.preload:
            return {}
        gguf = {k: v for k, v in (("initContextSize", self.init_context_size),
                                  ("initGpuLayerSize", self.init_gpu_layer_size),
                                  ("chatTemplateHint", self.chat_template_hint),
                                  ("kvCacheType", self.kv_cache_type)) if v is not None}
        onnx = {"executionProvider": self.execution_provider} if self.execution_provider else {}
        return {k: v for k, v in (("gguf", gguf), ("onnx", onnx)) if v}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
