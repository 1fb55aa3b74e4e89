"""A real gunicorn with real models loaded, on a store of its own (fuzzing may change it)."""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "inference"))

import modelgen  # noqa: E402
from support.servers import Server  # noqa: E402

KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _provision(server: Server, models: dict[str, tuple[str, Path, dict]]) -> None:
    for model_id, (kind, path, extra) in models.items():
        r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                       json={"id": model_id, "version": "1.0.0", "kind": kind, **extra})
        assert r.status_code in (200, 201), r.text
        with open(path, "rb") as f:
            r = httpx.post(f"{server.url}/store/v1/models/{model_id}/upload", headers=AUTH,
                           files={"file": (path.name, f)}, timeout=120)
        assert r.status_code == 200 and r.json()["readyToUse"], r.text


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    models = {
        "chat": ("llm", modelgen.make_llama_gguf(d / "chat.gguf", vocab="qwen2", qtype="F16"),
                 {"gguf": {"initContextSize": 256}}),
        "embed": ("embed", modelgen.make_bert_gguf(d / "embed.gguf"), {}),
        "clf": ("onnx", modelgen.make_onnx_classifier(d / "clf.onnx"), {}),
    }
    server = Server(d / "store", api_key=KEY, args=("--threads", "2", "--parallel", "4"),
                    log_path=d / "server.log").start(timeout=120)
    server.auth = AUTH
    try:
        _provision(server, models)
        yield server
    finally:
        server.stop()
