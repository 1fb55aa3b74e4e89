"""Generated models, a store that holds them, and real servers that serve them.

Models are made once per session (the tokenizers are real, copied from llama-cpp-python's
sdist) and provisioned through the registry's own HTTP API, as a user would.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import modelgen  # noqa: E402
from support.servers import Server  # noqa: E402

KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
CTX = 512


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        # qwen2's vocabulary and its own (Jinja) chat template, with chatml's special tokens
        "chat": modelgen.make_llama_gguf(d / "chat.gguf", vocab="qwen2", qtype="F16"),
        # phi-3's vocabulary with its template removed: no template at all
        "plain": modelgen.make_llama_gguf(d / "plain.gguf", vocab="phi-3", chat_template=None, seed=1),
        "embed": modelgen.make_bert_gguf(d / "embed.gguf"),
        "clf": modelgen.make_onnx_classifier(d / "clf.onnx"),
        "strings": modelgen.make_onnx_strings(d / "strings.onnx"),
        # a vlm's text model: phi-3's vocabulary and template (a small vocabulary keeps the
        # upload's GGUF check short), and a LLaVA-style projector whose output width is its
        # n_embd (64)
        "vlm-text": modelgen.make_llama_gguf(d / "vlm-text.gguf", vocab="phi-3", qtype="F16", seed=2),
        "mmproj": modelgen.make_mmproj_gguf(d / "mmproj.gguf", n_embd_text=modelgen.LlamaShape().n_embd),
        # one whose output width is not, which libmtmd refuses to pair with it
        "mmproj-32": modelgen.make_mmproj_gguf(d / "mmproj-32.gguf", n_embd_text=32),
    }


# id -> (kind, file, extra metadata)
CATALOGUE = {
    # a text model with a vision projector (the upload's second part, 'mmproj')
    "vlm": ("vlm", ("vlm-text", "mmproj"), {"gguf": {"initContextSize": CTX}}),
    "vlm-mismatch": ("vlm", ("vlm-text", "mmproj-32"), {"gguf": {"initContextSize": CTX}}),
    "chat": ("llm", "chat", {"gguf": {"initContextSize": CTX}}),
    "chat-hint": ("llm", "chat", {"gguf": {"chatTemplateHint": "chatml", "initContextSize": CTX}}),
    "plain": ("llm", "plain", {"gguf": {"initContextSize": CTX}}),
    "embed": ("embed", "embed", {}),
    "clf": ("onnx", "clf", {"onnx": {"executionProvider": "cuda"}}),
    "strings": ("onnx", "strings", {}),
}


def provision(server: Server, model_files: dict, ids=None, catalogue: dict = CATALOGUE) -> None:
    for model_id, (kind, file, extra) in catalogue.items():
        if ids is not None and model_id not in ids:
            continue
        r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                       json={"id": model_id, "version": "1.0.0", "kind": kind, **extra})
        assert r.status_code in (200, 201), r.text
        # a vlm uploads its projector in the same multipart body, in field 'mmproj'
        names = dict(zip(("file", "mmproj"), (file,) if isinstance(file, str) else file))
        with contextlib.ExitStack() as stack:
            parts = {field: (model_files[name].name, stack.enter_context(open(model_files[name], "rb")))
                     for field, name in names.items()}
            r = httpx.post(f"{server.url}/store/v1/models/{model_id}/upload", headers=AUTH,
                           files=parts, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["readyToUse"] is True, r.text
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                   json={"id": "pending", "version": "1.0.0", "kind": "llm"})
    assert r.status_code in (200, 201), r.text


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory, model_files) -> Path:
    """A store with every test model in it, provisioned through the registry API."""
    root = tmp_path_factory.mktemp("inference")
    store = root / "store"
    server = Server(store, api_key=KEY, log_path=root / "provision.log").start()
    try:
        provision(server, model_files)
    finally:
        server.stop()
    return store


@pytest.fixture(scope="session")
def start_server(store_dir, tmp_path_factory):
    """start_server(*args, env=None) -> a running Server on the shared store; stopped at the end."""
    started: list[Server] = []

    def start(*args, env=None, wait_ready=False) -> Server:
        log = tmp_path_factory.mktemp("logs") / "server.log"
        server = Server(store_dir, api_key=KEY, env=env, args=("--threads", "2", *args), log_path=log)
        started.append(server)
        return server.start(wait_ready=wait_ready, timeout=120)

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """The shared server: 4 slots, 2 threads."""
    return start_server("--parallel", "4")


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def reference_llm(model_files):
    """llama-cpp-python's own Llama on the chat model: what temperature 0 must reproduce."""
    import llama_cpp

    return llama_cpp.Llama(str(model_files["chat"]), n_ctx=CTX, n_threads=2, verbose=False)
