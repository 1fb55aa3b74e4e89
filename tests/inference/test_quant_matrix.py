"""The quantizations users pull, at several widths, with even and odd vocabularies.

Every model loads, answers a chat through the openai client, serves 4 concurrent streams
without taking the server down, and writes the same greedy text alone and batched.

Why a matrix: llama.cpp picks its matrix kernels by type and shape (legacy and K-quant
blocks, rows that are or are not a multiple of the tile width, the vocabulary's row count
in the output layer, one row per step or many). A kernel that faults on one of them kills
the gunicorn worker and every model in it. The AMX crash (docs/engines.md) did that on
the first prompt of every quantized model, and the other tests never saw it: their
models are F16 and F32, which have no AMX kernel. Against that build this module fails
on all 31 quantized models.

The models: llama architecture, 2 layers, random weights, and a cut of gpt-2's real
byte-level BPE vocabulary (its first 1000 tokens and the merges that make them) with
<|endoftext|> and ChatML's two tokens: 1003 rows, odd and no multiple of any tile; or
the same padded with unused tokens to 1024, as trainers pad embeddings. A small vocabulary
keeps the files, the upload check and the output layer small; one more case is the model
the crash was seen on, gpt-2's whole vocabulary with ChatML's tokens (50259 rows).
One F16 file per width and vocabulary: F16 and Q8_0 files are written by the gguf package,
the others by llama.cpp's own quantizer from that F16 file. K-quant blocks need rows that
are a multiple of 256: at width 256 the K-quant files hold K-quant tensors (checked
below); at 64 and 128 llama.cpp falls back to legacy types for the layers, as it does for
real models of such widths.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest

import modelgen
from support.servers import Server

KEY = "matrix"
AUTH = {"Authorization": f"Bearer {KEY}"}
QTYPES = ("Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
WIDTHS = (64, 128, 256)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# name -> (tokens kept from gpt-2, tokens added, pad to a multiple of, rows)
VOCABS = {"odd": (1000, SPECIALS, 1, 1003), "even": (1000, SPECIALS, 64, 1024),
          "gpt2": (None, SPECIALS[1:], 1, 50259)}
CASES = [(q, w, v) for w in WIDTHS for v in ("odd", "even") for q in QTYPES] + [("Q8_0", 128, "gpt2")]
N_TOKENS = 12
PROMPTS = [f"Tell me about the number {i}." for i in range(4)]
# the tensor types that show a K-quant file holds K-quant blocks (llama.cpp's Q4_K_M mixes
# Q4_K and Q6_K, Q5_K_M mixes Q5_K and Q6_K)
K_TYPES = {"Q4_K_M": {"Q4_K", "Q6_K"}, "Q5_K_M": {"Q5_K", "Q6_K"}, "Q6_K": {"Q6_K"}}


def model_id(qtype: str, width: int, vocab: str) -> str:
    return f"m-{qtype.lower().replace('_', '-')}-{width}-{vocab}"


class ModelyardServer(Server):
    """Server, started through the installed `modelyard` command (as a user starts it)."""

    def start(self, wait_ready: bool = False, timeout: float = 60) -> "ModelyardServer":
        cmd = [str(Path(sys.executable).parent / "modelyard"), "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--store", str(self.store), *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env, "MODELYARD_API_KEY": self.api_key}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_up("/readyz" if wait_ready else "/healthz", timeout)
        return self

    def worker_boots(self) -> int:
        # gunicorn logs one line per worker it starts; a second one means the first died
        return self.log().count("Booting worker")


@pytest.fixture(scope="module")
def matrix_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant-matrix")
    server = ModelyardServer(root / "store", api_key=KEY, log_path=root / "server.log",
                             args=("--parallel", "4", "--threads", "2"))
    server.start(timeout=120)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(matrix_server):
    return openai.OpenAI(base_url=matrix_server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def make_model(tmp_path_factory):
    """make_model(qtype, width, vocab) -> a GGUF file. One F16 file per width and vocabulary
    holds the weights that every quantization of that pair starts from."""
    d = tmp_path_factory.mktemp("quant-models")
    vocabs: dict[str, Path] = {}
    f16: dict[tuple[int, str], Path] = {}

    def vocab_file(name: str) -> Path:
        if name not in vocabs:
            n_base, extra, pad, _ = VOCABS[name]
            vocabs[name] = modelgen.make_vocab_gguf(d / f"vocab-{name}.gguf", n_base=n_base, extra=extra,
                                                    pad_to=pad)
        return vocabs[name]

    def make(qtype: str, width: int, vocab: str) -> Path:
        shape = modelgen.LlamaShape(n_embd=width, n_head=4, n_head_kv=2, n_ff=2 * width)
        path = d / f"{model_id(qtype, width, vocab)}.gguf"
        if qtype == "Q8_0":
            return modelgen.make_llama_gguf(path, vocab=vocab_file(vocab), shape=shape, qtype="Q8_0")
        if (width, vocab) not in f16:
            f16[(width, vocab)] = modelgen.make_llama_gguf(
                d / f"base-{width}-{vocab}.gguf", vocab=vocab_file(vocab), shape=shape, qtype="F16")
        if qtype == "F16":
            return f16[(width, vocab)]
        return modelgen.quantize_gguf(f16[(width, vocab)], path, qtype)

    return make


def tensor_info(path: Path) -> dict[str, tuple[str, list[int]]]:
    import gguf

    return {t.name: (t.tensor_type.name, [int(n) for n in t.shape]) for t in gguf.GGUFReader(str(path)).tensors}


def upload(server: Server, mid: str, path: Path) -> None:
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                   json={"id": mid, "version": "1.0.0", "kind": "llm", "gguf": {"initContextSize": 512}})
    assert r.status_code in (200, 201), r.text
    with open(path, "rb") as f:
        r = httpx.post(f"{server.url}/store/v1/models/{mid}/upload", headers=AUTH,
                       files={"file": (path.name, f)}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["readyToUse"] is True, r.text


def no_eog(vocab: str) -> dict[str, int]:
    """<|endoftext|> and ChatML's tokens forbidden, so that every answer is N_TOKENS long.
    They are the last ones before any padding."""
    n_base, extra, _, _ = VOCABS[vocab]
    first = 50256 if n_base is None else n_base
    return {str(first + i): -100 for i in range(3)}


def stream_text(client, mid: str, prompt: str, bias: dict) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(
        model=mid, messages=[{"role": "user", "content": prompt}], max_tokens=N_TOKENS,
        temperature=0, logit_bias=bias, stream=True, stream_options={"include_usage": True}))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


@pytest.mark.parametrize("qtype,width,vocab", CASES, ids=[model_id(*c)[2:] for c in CASES])
def test_model_serves_alone_and_batched(qtype, width, vocab, make_model, matrix_server, client):
    mid = model_id(qtype, width, vocab)
    path = make_model(qtype, width, vocab)
    bias = no_eog(vocab)
    if vocab != "gpt2":  # (reading gpt-2's whole vocabulary back would take seconds)
        info = tensor_info(path)
        assert info["output.weight"][1] == [width, VOCABS[vocab][3]]
        if qtype in K_TYPES and width % 256 == 0:
            # the file really holds K-quant blocks, so the K-quant kernels are the ones tested
            assert K_TYPES[qtype] & {t for t, _ in info.values()}, info
    upload(matrix_server, mid, path)
    boots = matrix_server.worker_boots()
    try:
        # loads on first use and answers a chat
        answer = client.chat.completions.create(
            model=mid, messages=[{"role": "system", "content": "You are terse."},
                                 {"role": "user", "content": "Name three colours."}],
            max_tokens=N_TOKENS, temperature=0, logit_bias=bias)
        assert answer.choices[0].finish_reason == "length"
        assert answer.usage.completion_tokens == N_TOKENS
        assert answer.choices[0].message.content

        # 4 streams at once: decode steps of 4 rows, then of fewer as they finish
        batched: dict[int, tuple[str, list]] = {}
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                batched[i] = stream_text(client, mid, PROMPTS[i], bias)
            except BaseException as e:  # noqa: BLE001 - reported below, with the server log
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, f"{errors!r}\n{matrix_server.log()[-3000:]}"
        for i, (text, chunks) in batched.items():
            assert chunks[-1].usage.completion_tokens == N_TOKENS
            assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
        assert len(batched) == len(PROMPTS)

        # the same prompts one at a time: greedy text equals the batched text
        for i, prompt in enumerate(PROMPTS):
            alone, _ = stream_text(client, mid, prompt, bias)
            assert alone == batched[i][0], (i, alone, batched[i][0])

        # and the worker that served all this is still the one that took the upload: it
        # did not die (gunicorn would have booted another, and logged the signal)
        assert httpx.get(matrix_server.url + "/healthz").status_code == 200
        assert matrix_server.proc.poll() is None
        assert matrix_server.worker_boots() == boots, matrix_server.log()[-3000:]
    finally:
        # unload and remove, so the module's memory and disk stay those of one model
        httpx.delete(f"{matrix_server.url}/v1/models/{mid}", headers=AUTH, timeout=60)
        httpx.delete(f"{matrix_server.url}/store/v1/models/{mid}", headers=AUTH, timeout=60)
        if path.name.startswith("m-"):
            path.unlink(missing_ok=True)
