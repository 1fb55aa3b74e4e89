"""New models made from what the store already holds, as `ollama create` makes them:
from another model or from uploaded blobs, with their own system prompt, template and
parameters, and optionally quantized by llama.cpp.

Files are taken by hard link (Transfer.place), so a derived model shares its base's
bytes and deleting either leaves the other whole; a quantized model gets a new file.
Every file still passes the commit's checks, so a create never makes a model ready
with a file that does not load.

The kind a GGUF's header says (gguf_kind, settled_kind, settle) is decided here for every
way a model enters the store: create, pull, upload and register by path.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from modelyard.server.registry import formats, lora, quantize
from modelyard.server.registry import store as st
from modelyard.server.registry.allowed import AllowedFolders
from modelyard.server.registry.blobs import Blobs
from modelyard.server.registry.errors import InvalidFile
from modelyard.server.shared import names
from modelyard.server.shared.facts import ADAPTER_KIND, GENERATIVE_KINDS

Emit = Callable[[dict], None]

# llama.cpp architectures of encoders, which embed and cannot generate, whether or not
# their converter wrote a pooling type.
EMBED_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
    "neo-bert", "t5encoder",
})


def pools(meta: dict) -> bool:
    """Whether a GGUF's model pools its output into one vector per input: the key Ollama's
    Model.Capabilities reads to call a model `embedding` rather than `completion`."""
    arch = meta.get("general.architecture", "")
    return f"{arch}.pooling_type" in meta or arch in EMBED_ARCHITECTURES


def gguf_kind(meta: dict, projector: bool) -> str:
    """The kind a GGUF model's header says (`meta` is formats.gguf_metadata's): vlm with a
    projector, embed when it pools, else llm. Every way a GGUF enters the store without
    a kind (create from blobs, register by path) takes it from here, and every way with
    one settles it here (settled_kind)."""
    if projector:
        return "vlm"
    return "embed" if pools(meta) else "llm"


def settled_kind(kind: str, meta: dict) -> str:
    """The kind a model was given (an upload's declared llm, a pull's planned one), once
    its file is here: an llm whose file pools is an embedding model."""
    return "embed" if kind == "llm" and pools(meta) else kind


def settle(store: st.Store, model_id: str) -> dict:
    """A model's kind settled by its committed file (settled_kind); returns its view."""
    view = store.get(model_id)
    if view["kind"] != "llm" or not view["readyToUse"]:
        return view
    try:
        meta = formats.gguf_metadata(store.file_path(model_id))
    except (formats.FormatError, OSError):
        return view
    kind = settled_kind(view["kind"], meta)
    return store.update(model_id, {"kind": kind}) if kind != view["kind"] else view


@dataclass
class Recipe:
    """What a create asks for; `base` is a model id, or `files` names blobs by role."""

    model_id: str
    base: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # role -> blob digest (see blob_roles)
    ollama: dict = field(default_factory=dict)  # template, system, parameters, license
    quantize: str | None = None
    adapter: Path | None = None  # a GGUF LoRA to serve on `base` (adapter_file finds it)


def blob_roles(blobs: Blobs, files: dict[str, str]) -> dict[str, str]:
    """Ollama's `files` (file name -> digest) by store role: a CLIP GGUF is the projector."""
    roles: dict[str, str] = {}
    for name, digest in files.items():
        path = blobs.path(digest)
        if not path.is_file():
            raise InvalidFile(f"File '{name}': no blob {digest}; upload it first with "
                              f"POST /api/blobs/{digest}")
        try:
            arch = formats.gguf_metadata(path).get("general.architecture")
        except formats.FormatError as exc:
            raise InvalidFile(f"File '{name}' is not a GGUF model: {exc}") from None
        role = "mmproj" if arch == "clip" else "model"
        if role in roles:
            raise InvalidFile(f"More than one {'projector' if role == 'mmproj' else 'model'} file in 'files'")
        roles[role] = digest
    if "model" not in roles:
        raise InvalidFile("'files' holds no model GGUF (only a projector)")
    return roles


def adapter_file(store: st.Store, blobs: Blobs, folders: AllowedFolders, ref: str) -> Path:
    """The file an adapter reference names: Ollama's `adapters` send a blob digest, the
    Modelfile's ADAPTER line (Ollama's modelfile.md) a blob (`@sha256:...`, as older clients
    rewrote a local file), an absolute path inside an allowed folder, or here an adapter
    model's name. A relative path is the client's own file: `ollama create` uploads it."""
    ref = ref.strip()
    if ref.startswith(("@sha256", "sha256")):
        return _blob(blobs, ref.removeprefix("@"))
    if ref.startswith("/"):
        path = folders.check(ref, "adapter path")
        if not path.is_file():
            raise InvalidFile(f"The adapter '{ref}' is not a file")
        return path
    if ref.startswith(("./", "../", "~")) or ref.lower().endswith((".gguf", ".safetensors")):
        raise InvalidFile(f"ADAPTER '{ref}' is a path on the client's machine: upload it as a blob "
                          "(ollama create does) or name an absolute path inside an allowed folder")
    model_id = names.to_id(ref)
    record = store.get(model_id)
    if record["kind"] != ADAPTER_KIND or not record["readyToUse"]:
        raise InvalidFile(f"Model '{model_id}' is not a ready adapter; ADAPTER takes a blob digest, "
                          "an absolute path or an adapter model's name")
    return store.file_path(model_id)


def check(store: st.Store, blobs: Blobs, recipe: Recipe) -> None:
    """Everything a create can be refused for before it starts (so the refusal is a plain
    4xx, not a line in a stream). Raises StoreError subclasses."""
    store.check_writable()
    st.check_id(recipe.model_id)
    if recipe.adapter is not None and recipe.base is None:
        raise InvalidFile("An adapter goes on a model: send 'from' with 'adapters'")
    if recipe.base is not None:
        base = store.get(recipe.base)
        if not base["readyToUse"] or base["kind"] == "onnx":
            raise InvalidFile(f"Model '{recipe.base}' has no complete GGUF file to create from")
        source = store.file_path(recipe.base)
        if recipe.adapter is not None:
            if base["kind"] not in GENERATIVE_KINDS:
                raise InvalidFile(f"Model '{recipe.base}' is a {base['kind']} model; adapters go on llm and vlm models")
            lora.check(source, recipe.adapter)
            return
    else:
        source = blobs.path(recipe.files["model"])
    if recipe.quantize:
        quantize.ftype(recipe.quantize)
        quantize.check_source(formats.gguf_metadata(source).get("general.file_type"))


def create(store: st.Store, blobs: Blobs, recipe: Recipe, emit: Emit, cancel: threading.Event) -> dict:
    """Make (or replace) `recipe.model_id` (after `check`); returns its registry view."""
    if recipe.adapter is not None:
        return _create_adapter(store, blobs, recipe, emit)
    sources: dict[str, Path]
    if recipe.base is not None:
        base = store.get(recipe.base)
        record = store.meta(recipe.base)
        gguf_settings = record.get("gguf")
        ollama = dict(record.get("ollama") or {})
        sources = {role: store.file_path(recipe.base, role) for role in record["files"]}
        kind = settled_kind(base["kind"], formats.gguf_metadata(sources["model"]))
    else:
        sources = {role: blobs.path(digest) for role, digest in recipe.files.items()}
        kind = gguf_kind(formats.gguf_metadata(sources["model"]), "mmproj" in sources)
        gguf_settings, ollama = None, {}
    params = {**(ollama.get("parameters") or {}), **(recipe.ollama.get("parameters") or {})}
    ollama.update({k: v for k, v in recipe.ollama.items() if k != "parameters" and v is not None})
    if params:
        ollama["parameters"] = params

    fields = {"id": recipe.model_id, "kind": kind}
    if gguf_settings:
        fields["gguf"] = gguf_settings
    with store.provisional(fields, new={"version": ""}):
        with store.transfer(recipe.model_id) as transfer:
            for role, path in sources.items():
                if role == "model" and recipe.quantize:
                    _quantize(path, transfer, recipe.quantize, emit, cancel)
                else:
                    emit({"status": f"using existing layer sha256:{_sha(store, recipe, role, path)}"})
                    transfer.place(role, path)
            emit({"status": "verifying sha256 digest"})
            transfer.commit()
        emit({"status": "writing manifest"})
        view = store.update(recipe.model_id, {"ollama": ollama}) if ollama else store.get(recipe.model_id)
    emit({"status": "success"})
    return view


def _blob(blobs: Blobs, digest: str) -> Path:
    path = blobs.path(digest)
    if not path.is_file():
        raise InvalidFile(f"No blob {digest}; upload it first with POST /api/blobs/{digest}")
    return path


def _create_adapter(store: st.Store, blobs: Blobs, recipe: Recipe, emit: Emit) -> dict:
    """A model of kind adapter: the file (a blob or a stored adapter's, hard-linked; a user's,
    copied) served on its base per request."""
    info = lora.check(store.file_path(recipe.base), recipe.adapter)
    fields = {"id": recipe.model_id, "kind": ADAPTER_KIND, "adapter": {"base": recipe.base, **info}}
    with store.provisional(fields, new={"version": ""}):
        with store.transfer(recipe.model_id) as transfer:
            transfer.place("model", recipe.adapter)
            emit({"status": "verifying sha256 digest"})
            transfer.commit()
        if recipe.ollama:
            store.update(recipe.model_id, {"ollama": recipe.ollama})
    emit({"status": "success"})
    return store.get(recipe.model_id)


def _sha(store: st.Store, recipe: Recipe, role: str, path: Path) -> str:
    if recipe.base is not None:
        return store.meta(recipe.base)["files"][role]["sha256"]
    return path.name.removeprefix("sha256-")


def _quantize(source: Path, transfer: st.Transfer, target: str, emit: Emit, cancel: threading.Event) -> None:
    meta = formats.gguf_metadata(source)
    file_type = meta.get("general.file_type")
    status = f"quantizing {_type_name(file_type)} model to {target.upper()}"
    out = transfer.partial_path("model")

    def progress(done: int, total: int) -> None:
        emit({"status": status, "digest": "0", "total": total, "completed": done})

    quantize.quantize(source, out, target, file_type, progress, _Either(cancel, transfer.cancel))
    transfer.writer("model", resume=True)  # hash what the quantizer wrote; commit checks it


def _type_name(file_type: int | None) -> str:
    return {0: "F32", 1: "F16", 32: "BF16"}.get(file_type, f"type {file_type}")


class _Either:
    """A cancel that is set when either of two events is: the client's or the store's (DELETE)."""

    def __init__(self, a: threading.Event, b: threading.Event):
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()

    def wait(self, timeout: float) -> bool:
        return self.a.wait(timeout) or self.b.is_set()
