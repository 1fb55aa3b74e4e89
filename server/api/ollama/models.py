"""Ollama's model routes: GET/HEAD / ("Ollama is running", which clients probe),
/api/version, /api/tags, /api/show, /api/copy, /api/delete, /api/ps.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from importlib.metadata import version

import falcon
import gguf

from modelyard.server.shared import names
from modelyard.server.api.ollama import bodies
from modelyard.server.api.ollama.schema import CopyBody, DeleteBody, ShowBody
from modelyard.server.api.serving import with_serving
from modelyard.server.http.errors import ApiError, bad_request
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.registry import formats


GGUF_KINDS = ("llm", "vlm", "embed")
# The names a template uses: Go's {{ .Tools }} and Jinja's {% if tools %} alike.
_TEMPLATE_ACTION = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def human_number(n: int) -> str:
    """A parameter count as Ollama's format.HumanNumber writes it: 1.2B, 6.50M, 22K, 54."""
    for unit, suffix, decimals in ((10**9, "B", 1), (10**6, "M", 2)):
        if n >= unit:
            x = n / unit
            return f"{x:.0f}{suffix}" if x == int(x) else f"{x:.{decimals}f}{suffix}"
    return f"{n / 1000:.0f}K" if n >= 1000 else str(n)


def template_vars(template: str) -> set[str]:
    """The lower-cased names a template's actions use (Ollama's Template.Vars)."""
    return {name.lower() for action in _TEMPLATE_ACTION.findall(template)
            for name in _IDENTIFIER.findall(action)}


def capabilities(kind: str, meta: dict, template: str) -> list[str]:
    """What /api/show lists, in Ollama's order and by its rules (Model.Capabilities in
    ollama's server/images.go): `embedding` for a model that pools (the store's kind embed,
    derived from the file) else `completion`; `vision` for a vision tower in the GGUF or a
    projector; `tools` and `insert` when the template uses tools or a suffix; `thinking`
    when it lays out a thinking trace."""
    arch = meta.get("general.architecture", "")
    out = ["embedding" if kind == "embed" else "completion"]
    if f"{arch}.vision.block_count" in meta:
        out.append("vision")
    used = template_vars(template)
    if "tools" in used:
        out.append("tools")
    if "suffix" in used:
        out.append("insert")
    if kind == "vlm" and "vision" not in out:
        out.append("vision")
    if "thinking" in used or "reasoning_content" in used or "<think>" in template:
        out.append("thinking")
    return out


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, timezone.utc).isoformat().replace("+00:00", "Z")



def parameter_size(meta: dict) -> str:
    """The converter's size label ("1B"), else the tensors' element count as Ollama writes
    it (formats counts them from the header when the file does not say)."""
    count = meta.get("general.parameter_count")
    return meta.get("general.size_label") or (human_number(count) if isinstance(count, int) and count else "")


class _Models:
    """What the model routes read of the registry and of a model's GGUF header."""

    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.store = dispatcher.manager.store
        self._meta = formats.MetadataCache()

    def gguf_meta(self, model_id: str) -> dict:
        return self._meta.get(model_id, self.store.file_path(model_id))

    def details(self, model_id: str) -> dict:
        meta = self.gguf_meta(model_id)
        family = meta.get("general.architecture", "")
        file_type = meta.get("general.file_type")
        try:
            quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else ""
        except ValueError:
            quant = str(file_type)
        return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else None,
                "parameter_size": parameter_size(meta), "quantization_level": quant}

    def entry(self, view: dict) -> dict:
        return {"name": names.to_name(view["id"]), "model": names.to_name(view["id"]),
                "modified_at": _iso(view.get("createdAt")), "size": view.get("totalSize") or 0,
                "digest": view.get("sha256", ""), "details": self.details(view["id"])}


class Root:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Ollama is running"

    def on_head(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT


class Version:
    def on_get(self, req, resp):
        resp.media = {"version": version("modelyard")}


class Tags(_Models):
    def on_get(self, req, resp):
        manager = self.dispatcher.manager
        models = [with_serving(self.entry(v), manager, v["id"]) for v in self.store.list(ready=True)
                  if v["kind"] in GGUF_KINDS]
        resp.media = {"models": models}


class Show(_Models):
    """POST /api/show (Ollama) and GET /api/show?name= (the Ollama Toolkit's form)."""

    def on_get(self, req, resp):
        name = req.get_param("name") or req.get_param("model")
        if not name:
            raise bad_request("Query parameter 'name' is required")
        resp.media = self.show(name)

    def on_post(self, req, resp):
        body = bodies.read(req, ShowBody, self.dispatcher.settings.max_body_size)
        resp.media = self.show(body.target)

    def show(self, name: str) -> dict:
        model_id = names.to_id(name)
        view = self.store.get(model_id)
        if view["kind"] not in GGUF_KINDS or not view["readyToUse"]:
            raise ApiError(404, f"model '{name}' not found")
        meta = self.gguf_meta(model_id)
        details = self.details(model_id)
        record = self.store.meta(model_id).get("ollama") or {}
        params = dict(record.get("parameters") or {})
        ctx = (view.get("gguf") or {}).get("initContextSize")
        if ctx and "num_ctx" not in params:
            params["num_ctx"] = ctx
        lines = [f"{k} {json.dumps(v)}" if isinstance(v, str) else f"{k} {v}"
                 for k, values in params.items() for v in (values if isinstance(values, list) else [values])]
        parameters = "\n".join(lines)
        template = record.get("template") or meta.get("tokenizer.chat_template", "")
        modelfile = f"# Modelfile generated by Modelyard\nFROM {names.to_name(model_id)}\n"
        if record.get("template"):
            modelfile += f'TEMPLATE """{record["template"]}"""\n'
        if record.get("system"):
            modelfile += f'SYSTEM """{record["system"]}"""\n'
        modelfile += "".join(f"PARAMETER {line}\n" for line in lines)
        return {
            "modelfile": modelfile, "parameters": parameters, "template": template,
            "system": record.get("system", ""), "license": record.get("license", ""), "details": details,
            "model_info": {k: v for k, v in meta.items() if not k.startswith("tokenizer.ggml.")},
            "capabilities": capabilities(view["kind"], meta, template), "modified_at": _iso(view.get("createdAt")),
            # the Ollama Toolkit's flat fields
            "name": names.to_name(model_id), "size": view.get("totalSize") or 0,
            "digest": f"sha256:{view['sha256']}" if view.get("sha256") else "", "format": "gguf",
            "family": details["family"], "parameter_size": details["parameter_size"],
            "quantization_level": details["quantization_level"],
            "model_file": str(self.store.file_path(model_id)),
        }


class Copy(_Models):
    def on_post(self, req, resp):
        body = bodies.read(req, CopyBody, self.dispatcher.settings.max_body_size)
        self.store.copy(names.to_id(body.source), names.to_id(body.destination))
        resp.media = {"status": "success"}


class Delete(_Models):
    def on_delete(self, req, resp):
        body = bodies.read(req, DeleteBody, self.dispatcher.settings.max_body_size)
        model_id = names.to_id(body.target)
        self.dispatcher.manager.unload(model_id)
        self.store.delete(model_id)
        resp.media = {"status": "success"}


class Ps(_Models):
    def on_get(self, req, resp):
        models, running = [], []
        for m in self.dispatcher.manager.loaded():
            if m.kind not in GGUF_KINDS:
                continue
            view = self.store.get(m.id)
            engine = m.engine
            entry = with_serving(self.entry(view), self.dispatcher.manager, m.id)
            entry.update({"expires_at": "2318-01-01T00:00:00Z", "size_vram": 0,
                          "context_length": engine.context_size or 0})
            models.append(entry)
            running.append({"name": entry["name"], "status": "running", "pid": engine.pid})
        resp.media = {"models": models, "running": running}


# ---- generation -----------------------------------------------------------------------
