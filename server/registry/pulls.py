"""Pull and push whole models by name, as `ollama pull` and `ollama push` do.

- `hf.co/{org}/{repo}[:{quant}]` (or huggingface.co/...): the repo's GGUF of that
  quantization (hub.pick_gguf), and its projector when it has one, through huggingface_hub.
- Any other name is an OCI registry's: `host[:port]/namespace/model:tag`, or a short
  name on the default registry (`llama3.2:1b` is registry.ollama.ai/library/llama3.2:1b).

Every file goes through the store's transfer (fetch.download_into), so the bytes are
hashed on the way in, a dropped connection resumes, a cancel stops within one chunk, and
nothing is ready until its commit. A pull that fails removes the model it created.

Progress goes to `emit` as Ollama's pull and push events:
{"status": "downloading", "digest", "total", "completed"}, "verifying sha256 digest",
"writing manifest", "success" (push: "pushing" ... "pushing manifest", "success").
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Callable

from modelyard.server.registry import derive, diskio, fetch, formats, hub, oci
from modelyard.server.registry import store as st
from modelyard.server.registry.errors import FetchError, ModelNotFound
from modelyard.server.shared import names

HF_HOSTS = ("hf.co", "huggingface.co", "www.huggingface.co")
Emit = Callable[[dict], None]


@dataclass
class Plan:
    """What a pull will fetch: the store's sources by role, and what it records beside."""

    model_id: str
    kind: str
    sources: dict[str, fetch.Source]
    digests: dict[str, str] = field(default_factory=dict)  # role -> "sha256:..." (OCI layers)
    sizes: dict[str, int | None] = field(default_factory=dict)
    ollama: dict = field(default_factory=dict)  # template, system, parameters, license


def plan_pull(name: str, insecure: bool = False, registry: str | None = None) -> Plan:
    host, repository, tag = names.reference(name)
    model_id = names.to_id(name)
    if not host or not repository:
        raise FetchError(f"'{name}' names no registry host and repository to pull from", code=400)
    if host in HF_HOSTS:
        return plan_hf(model_id, repository, quant=tag)
    if registry and host == names.DEFAULT_REGISTRY:
        host = registry  # a configured default registry serves the short names
    return _plan_oci(model_id, oci.Reference(host, repository, tag, insecure))


def plan_hf(model_id: str, repo_id: str, quant: str | None = None, filename: str | None = None) -> Plan:
    """A pull of a Hugging Face repo's GGUF: the one named `filename`, else the one of
    quantization `quant` (hub.PREFERENCE when None), with the repo's projector."""
    files = hub.repo_files(repo_id)
    choice = hub.pick_file(files, filename) if filename else hub.pick_gguf(files, quant)
    sources = {"model": fetch.Source(f"hf://{repo_id}/{choice.model.path}", repo_id=repo_id,
                                     filename=choice.model.path, size=choice.model.size)}
    sizes = {"model": choice.model.size}
    if choice.mmproj:
        sources["mmproj"] = fetch.Source(f"hf://{repo_id}/{choice.mmproj.path}", repo_id=repo_id,
                                         filename=choice.mmproj.path, size=choice.mmproj.size)
        sizes["mmproj"] = choice.mmproj.size
    return Plan(model_id, "vlm" if choice.mmproj else "llm", sources, sizes=sizes)


def _plan_oci(model_id: str, ref: oci.Reference) -> Plan:
    client = oci.Client(ref, f"repository:{ref.repository}:pull")
    try:
        manifest, _ = client.manifest()
        if manifest.config is not None:
            _check_config(client.small_blob(manifest.config, oci.CONFIG_LIMIT))
        headers = (("Authorization", f"Bearer {client.token}"),) if client.token else ()
        plan = Plan(model_id, "llm", {})
        for role, media_type in (("model", oci.MODEL), ("mmproj", oci.PROJECTOR)):
            layer = manifest.layer(media_type)
            if layer:
                url = ref.blob_url(layer.digest)
                # The layer's declared size bounds the download: a longer body is refused.
                plan.sources[role] = fetch.Source(url, url=url, headers=headers, size=layer.size)
                plan.digests[role] = layer.digest
                plan.sizes[role] = layer.size
        plan.kind = "vlm" if "mmproj" in plan.sources else "llm"
        for media_type, key in oci.TEXT_LAYERS.items():
            layer = manifest.layer(media_type)
            if layer:
                text = client.small_blob(layer).decode("utf-8", "replace")
                plan.ollama[key] = _params(text) if key == "parameters" else text
        return plan
    finally:
        client.close()


def _check_config(data: bytes) -> None:
    """The config blob (verified against its digest) is a JSON object, as Ollama writes it."""
    try:
        value = json.loads(data)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise FetchError("The model's config blob is not a JSON object")


def _params(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        raise FetchError("The model's params layer is not JSON") from None
    return value if isinstance(value, dict) else {}


def pull(store: st.Store, plan: Plan, emit: Emit, cancel: threading.Event) -> dict:
    """Fetch a planned model into the store; returns its registry view."""
    try:
        existing = store.get(plan.model_id)
    except ModelNotFound:
        existing = None
    if existing and _up_to_date(store, plan, existing):
        for role, source in plan.sources.items():  # nothing to fetch: each file is complete
            size = plan.sizes.get(role)
            emit({"status": "downloading", "digest": plan.digests.get(role) or source.identity,
                  "total": size, "completed": size})
        emit({"status": "success"})
        return existing
    diskio.ensure_free(store.root, sum(size or 0 for size in plan.sizes.values()))
    with store.provisional({"id": plan.model_id, "kind": plan.kind}, new={"version": ""}):
        with store.transfer(plan.model_id) as transfer:
            fetch.download_into(transfer, plan.sources, sha256=_hex(plan.digests.get("model")),
                                on_progress=_progress(plan, emit), cancel=cancel)
        emit({"status": "verifying sha256 digest"})
        _check_projector_digest(store, plan)
        emit({"status": "writing manifest"})
        if plan.ollama:
            store.update(plan.model_id, {"ollama": plan.ollama})
        view = derive.settle(store, plan.model_id)
    emit({"status": "success"})
    return view


def _hex(digest: str | None) -> str | None:
    return digest.split(":", 1)[1] if digest else None


def _up_to_date(store: st.Store, plan: Plan, view: dict) -> bool:
    """Ready, and every file is the one the plan would fetch (same source, or same digest)."""
    if not view["readyToUse"]:
        return False
    files = store.meta(plan.model_id)["files"]
    for role, source in plan.sources.items():
        record = files.get(role) or {}
        digest = plan.digests.get(role)
        if digest and record.get("sha256") != _hex(digest):
            return False
        if not digest and record.get("source") != source.identity:
            return False
    return True


def _check_projector_digest(store: st.Store, plan: Plan) -> None:
    """download_into checks the main file's hash; a projector layer's digest is checked here."""
    digest = plan.digests.get("mmproj")
    if digest and store.meta(plan.model_id)["files"].get("mmproj", {}).get("sha256") != _hex(digest):
        raise FetchError("The projector layer does not match its digest")


def _progress(plan: Plan, emit: Emit) -> fetch.Progress:
    def report(event: dict) -> None:
        role = "model" if "size" in event else next(iter(event))
        values = event if role == "model" else event[role]
        label = plan.digests.get(role) or plan.sources[role].identity
        emit({"status": "downloading", "digest": label, "total": values.get("totalSize") or plan.sizes.get(role),
              "completed": values["size"]})
    return report


# ---- push -------------------------------------------------------------------------------


def push(store: st.Store, name: str, emit: Emit, cancel: threading.Event, insecure: bool = False) -> None:
    """Upload a model to the registry its name names, blob by blob, then its manifest."""
    model_id = names.to_id(name)
    view = store.get(model_id)
    if not view["readyToUse"] or view["kind"] == "onnx":
        raise st.InvalidFile(f"Model '{name}' has no complete GGUF file to push")
    host, repository, tag = names.reference(name)
    if host in HF_HOSTS:
        raise st.InvalidFile("Pushing to Hugging Face is not supported; push to an OCI registry "
                             "(host[:port]/namespace/model:tag)")
    ref = oci.Reference(host, repository, tag, insecure)
    record = store.meta(model_id)
    records = record["files"]
    files = [(oci.MODEL, "model")] + ([(oci.PROJECTOR, "mmproj")] if "mmproj" in records else [])
    layers = [oci.Layer(mt, "sha256:" + records[role]["sha256"], records[role]["size"]) for mt, role in files]
    texts = _text_layers(record.get("ollama") or {})
    layers += [oci.Layer(mt, oci.digest_of(data), len(data)) for mt, data in texts]
    meta = formats.gguf_metadata(store.file_path(model_id))
    config_data = oci.config_blob(meta.get("general.architecture", ""), str(meta.get("general.file_type", "")),
                                  layers)
    config = oci.Layer(oci.CONFIG_TYPE, oci.digest_of(config_data), len(config_data))
    client = oci.Client(ref, f"repository:{repository}:pull,push")
    try:
        emit({"status": "retrieving manifest"})
        for i, layer in enumerate(layers):
            def progress(sent: int, layer=layer) -> None:
                emit({"status": "pushing", "digest": layer.digest, "total": layer.size, "completed": sent})
            if client.has_blob(layer.digest):
                progress(layer.size)
                continue
            if i < len(files):
                chunks = oci.file_chunks(store.file_path(model_id, files[i][1]), layer, progress, cancel)
            else:
                data = dict(texts)[layer.media_type]
                chunks = iter([data])
            progress(0)
            client.upload(layer.digest, layer.size, chunks)
            progress(layer.size)
        if not client.has_blob(config.digest):
            client.upload(config.digest, config.size, iter([config_data]))
        emit({"status": "pushing manifest"})
        client.put_manifest(oci.build_manifest(layers, config))
    finally:
        client.close()
    emit({"status": "success"})


def _text_layers(record: dict) -> list[tuple[str, bytes]]:
    out = []
    for media_type, key in oci.TEXT_LAYERS.items():
        value = record.get(key)
        if value:
            out.append((media_type, (json.dumps(value) if key == "parameters" else value).encode()))
    return out
