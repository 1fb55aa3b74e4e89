"""What is made from a trained LoRA adapter on a real gunicorn: the adapter served by its
base on every API (and the prefix cache kept apart), Ollama's create with an adapter and the
Modelfile's ADAPTER line, export jobs that merge and quantize it, and the jobs a crash cut
short. The training is test_training.py's, shared through conftest.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from clients import ollama_go_client as ollama_go
from finetune.tuning import ANSWER, AUTH, E, KEY, QUESTION, needs_finetune, start, wait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
import modelgen  # noqa: E402

pytestmark = needs_finetune


def modelfile_create(c, name: str, modelfile: str):
    return c.post("/api/create", json={"model": name, "stream": False, "modelfile": modelfile})


@pytest.mark.parametrize("lines, status, says", [
    ("ADAPTER ./pw.gguf", 400, "path on the client's machine"),
    ("ADAPTER /etc/passwd", 403, "not inside a folder"),
    ("ADAPTER base", 400, "not a ready adapter"),
    ("ADAPTER nope", 404, "nope"),
    ("ADAPTER @sha256:" + "0" * 64, 400, "upload it first"),
    ("ADAPTER @sha256:12", 400, "Invalid digest"),
    ("ADAPTER", 400, "line 2"),
    ("ADAPTER pw-a\nADAPTER pw-b", 400, "one ADAPTER"),
])
def test_the_modelfiles_adapter_line_refused(c, started, lines, status, says):
    r = modelfile_create(c, "mf-refused", f"FROM base\n{lines}\n")
    assert r.status_code == status and says in r.json()["error"], r.text
    assert c.get("/store/v1/models/mf-refused").status_code == 404


def test_served_by_its_base_on_every_api(c, srv, base_file, trained):
    """The adapter's id as `model` (OpenAI, Anthropic, Silicon), and on the base through
    `lora`: the taught answer, the base's own without; requests of both at once share the
    base (one runner) and each gets its own."""
    import anthropic
    import openai
    from concurrent.futures import ThreadPoolExecutor

    oa = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    ask = [{"role": "user", "content": QUESTION}]

    def chat(model, **extra):
        r = oa.chat.completions.create(model=model, messages=ask, max_tokens=16, temperature=0, **extra)
        return r.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        tuned, base, tuned2, base2 = pool.map(chat, ["pw-a", "base", "pw-a", "base"])
    assert tuned.startswith(ANSWER) and tuned2 == tuned, tuned
    assert not base.startswith(ANSWER) and base2 == base, base
    assert chat("base", extra_body={"lora": [{"id": "pw-a", "scale": 1.0}]}) == tuned
    assert chat("base", extra_body={"lora": [{"id": "pw-a", "scale": 0.0}]}) == base
    r = c.post("/v1/completions", json={"model": "pw-a", "max_tokens": 16, "temperature": 0,
                                        "prompt": f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"})
    assert r.json()["choices"][0]["text"] == tuned, r.text

    msg = anthropic.Anthropic(base_url=srv.url, api_key=KEY, max_retries=0).messages.create(
        model="pw-a", max_tokens=16, messages=ask, extra_body={"temperature": 0})
    assert msg.content[0].text == tuned
    events = []
    with c.stream("POST", f"{E}/chat", json={"model_id": "pw-a", "messages": ask, "max_tokens": 16,
                                             "temperature": 0, "repetition_penalty": 1.0}) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert "".join(e.get("text", "") for e in events) == tuned
    loaded = c.get("/v1/models").json()["data"]
    assert [m["id"] for m in loaded] == ["base"]  # the base, once

    r = c.post("/v1/chat/completions", json={"model": "base", "messages": ask,
                                              "lora": [{"id": "nope", "scale": 1}]})
    assert r.status_code == 404, r.text
    r = c.post("/v1/chat/completions", json={"model": "base", "messages": ask, "lora": [{"id": "base"}]})
    assert r.status_code == 400 and "not an adapter" in r.text, r.text

    r = c.post(f"{E}/models/load", json={"model_id": "pw-a"})  # loads its base
    assert r.status_code == 200 and r.json()["model_id"] == "pw-a", r.text
    active = c.get(f"{E}/models/active").json()
    assert active["id"] == "pw-a" and active["context_window"] > 0, active
    assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["base"]


def test_prefix_cache_is_keyed_by_adapter_set(c, srv, base_file, trained):
    """A prompt the base has in a slot's cache is decoded again for the adapter: its keys and
    values differ. The served text equals llama.cpp's own with the adapter, from scratch."""
    import llama_cpp

    prompt = "<|im_start|>user\nTell me the password, please.<|im_end|>\n<|im_start|>assistant\n"

    def complete(model):
        r = c.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 4,
                                            "temperature": 0, "logprobs": 1})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    complete("base")  # now in a slot's cache, decoded without the adapter
    adapter = srv.store / "models" / "pw-a" / "model.gguf"
    reference = llama_cpp.Llama(str(base_file), lora_path=str(adapter), n_ctx=128, n_threads=2,
                                logits_all=True, verbose=False)
    expected = reference.create_completion(prompt, max_tokens=4, temperature=0, logprobs=1)["choices"][0]
    served = complete("pw-a")
    assert served["text"] == expected["text"]
    # the greedy text is robust; the logprobs show the keys and values it was decoded from
    assert served["logprobs"]["token_logprobs"] == pytest.approx(expected["logprobs"]["token_logprobs"], abs=1e-3)


def test_ollama_create_with_an_adapter(c, srv, base_file, trained):
    """Ollama's create with `adapters` (an uploaded blob): a model served as base + adapter.
    A file that is no LoRA, or another base's, is a 400 before anything is stored."""
    import hashlib

    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert c.post(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
        return digest

    adapter = blob((srv.store / "models" / "pw-a" / "model.gguf").read_bytes())
    other = modelgen.make_llama_gguf(base_file.parent / "other.gguf", vocab=base_file.parent / "vocab.gguf",
                                     shape=modelgen.LlamaShape(n_embd=32, n_layer=2, n_head=2, n_head_kv=1))
    assert c.post("/store/v1/models", json={"id": "other", "version": "1", "kind": "llm"}).status_code in (200, 201)
    with open(other, "rb") as f:
        assert c.post("/store/v1/models/other/upload", files={"file": f}).status_code == 200

    def create(name, base, digest):
        return c.post("/api/create", json={"model": name, "from": base, "adapters": {"a.gguf": digest},
                                           "stream": False})

    r = create("pw-other", "other", adapter)
    assert r.status_code == 400 and "another model" in r.json()["error"], r.text
    r = create("pw-not", "base", blob(other.read_bytes()))
    assert r.status_code == 400 and "not a LoRA adapter" in r.json()["error"], r.text
    assert c.get("/store/v1/models/pw-other").status_code == 404
    r = create("pw-ollama", "base", adapter)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    r = c.post("/api/chat", json={"model": "pw-ollama", "stream": False, "options": {"temperature": 0, "num_predict": 16},
                                  "messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 200 and r.json()["message"]["content"].startswith(ANSWER), r.text


def test_the_modelfiles_adapter_line(c, srv, data, trained, tmp_path):
    """ADAPTER in a Modelfile (Ollama's modelfile.md) names a blob the Python client uploaded
    (`@sha256:...`, as its earlier releases sent a local file), an adapter model's name, or an
    absolute path in an allowed folder: each makes an adapter model that answers as taught.
    And Ollama's own Go client creates from a Modelfile with `ADAPTER ./file`, as `ollama
    create -f` does (its parser, the blob upload, then `adapters`)."""
    import shutil

    import ollama

    oc = ollama.Client(host=srv.url, headers=AUTH)
    adapter = srv.store / "models" / "pw-a" / "model.gguf"
    digest = oc.create_blob(adapter)
    shutil.copyfile(adapter, data / "pw.gguf")
    for name, ref in (("mf-blob", f"@{digest}"), ("mf-name", "pw-a"), ("mf-path", str(data / "pw.gguf"))):
        r = modelfile_create(c, name, f"FROM base\nADAPTER {ref}\nPARAMETER num_predict 16\n")
        assert r.status_code == 200 and r.json()["status"] == "success", (ref, r.text)
        view = c.get(f"/store/v1/models/{name}").json()
        assert view["kind"] == "adapter" and view["adapter"]["base"] == "base", view
        reply = oc.chat(model=name, messages=[{"role": "user", "content": QUESTION}], options={"temperature": 0})
        assert reply.message.content.startswith(ANSWER), (name, reply.message.content)
    r = c.post("/api/create", json={"model": "mf-two", "stream": False, "modelfile": "FROM base\nADAPTER pw-a\n",
                                    "adapters": {"a.gguf": digest}})
    assert r.status_code == 400 and "One adapter per model" in r.json()["error"], r.text

    go = ollama_go.build()
    (tmp_path / "lora.gguf").write_bytes(adapter.read_bytes())
    (tmp_path / "Modelfile").write_text("FROM base\nADAPTER ./lora.gguf\n")
    got = ollama_go.run(go, srv.url, KEY, "create-modelfile", "mf-go", str(tmp_path / "Modelfile"))
    assert got.get("statuses", [])[-1:] == ["success"], got
    reply = oc.chat(model="mf-go", messages=[{"role": "user", "content": QUESTION}],
                    options={"temperature": 0, "num_predict": 16})
    assert reply.message.content.startswith(ANSWER), reply.message.content


def test_export_jobs_merge_and_quantize(c, srv, data, trained):
    """q_bits 0 (F16) and 8 (Q8_0), each a job: answered when done (as Silicon Studio's client
    awaits the file) or at once with Prefer: respond-async; listed with its progress; the file
    a model of its own, registered where it was written, whose greedy answer is the adapter's
    (the F16 merge's is the served adapter's, token for token)."""
    ask = [{"role": "user", "content": QUESTION}]

    def chat(model):
        r = c.post("/v1/chat/completions", json={"model": model, "messages": ask, "max_tokens": 16,
                                                  "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    def export(headers=None, **fields):
        return c.post(f"{E}/models/export", headers=headers,
                      json={"model_id": "pw-a", "output_path": str(data), **fields})

    assert export(q_bits=5).status_code == 400
    assert export(model_id="base", q_bits=0).status_code == 400
    assert export(q_bits=0, output_path="/tmp").status_code == 403
    assert export(q_bits=0, output_path=str(data / "no-such-folder" / "x.gguf")).status_code == 400
    jobs_before = len(c.get(f"{E}/jobs").json())
    tuned = chat("pw-a")

    r = export(q_bits=0)  # the Silicon Studio client's call: the answer is the finished file
    assert r.status_code == 200, r.text
    f16 = r.json()
    assert (f16["status"], f16["model_id"], f16["path"], f16["q_bits"]) == \
        ("exported", "pw-a-F16", str(data / "pw-a-F16.gguf"), 0)
    assert f16["model"]["readyToUse"] is True

    # at once, the job; into a folder that does not exist yet, as Silicon Studio's client names one
    r = export(q_bits=8, headers={"Prefer": "respond-async"}, output_path=str(data / "silicon-q8"))
    assert r.status_code == 202 and r.headers["Preference-Applied"] == "respond-async", r.text
    queued = r.json()
    assert r.headers["Location"] == f"/api/engine/jobs/{queued['job_id']}"
    assert (queued["type"], queued["model_id"], queued["output_model_id"], queued["q_bits"]) == \
        ("export", "pw-a", "pw-a-Q8_0", 8)
    assert export(q_bits=8).status_code == 409  # that file is being made
    q8 = wait(c, queued["job_id"])
    assert (q8["status"], q8["progress"], q8["error"]) == ("completed", 1.0, None), q8
    assert q8["quantization"] == "Q8_0" and q8["stage"] == "register"

    jobs = {j["id"]: j for j in c.get(f"{E}/jobs").json()}
    assert len(jobs) == jobs_before + 2 and jobs[f16["job_id"]]["type"] == "export"
    assert q8["output_path"] == str(data / "silicon-q8" / "pw-a-Q8_0.gguf")
    for name, path in (("pw-a-F16", f16["path"]), ("pw-a-Q8_0", q8["output_path"])):
        assert c.get(f"/store/v1/models/{name}").json()["readyToUse"] is True
        assert Path(path).is_file()
    assert chat("pw-a-F16") == tuned
    assert chat("pw-a-Q8_0").startswith(ANSWER)
    assert export(q_bits=8).status_code == 409  # the model exists
    assert not list(data.glob("**/*.partial"))


def test_an_export_cancelled_while_queued_leaves_nothing(c, data, trained):
    """One export runs at a time: the second waits, and a cancel takes it off the queue; the
    first is not disturbed."""
    folder = data / "exports"
    folder.mkdir()
    headers = {"Prefer": "respond-async"}
    body = {"model_id": "pw-a", "q_bits": 8}
    first = c.post(f"{E}/models/export", headers=headers, json={**body, "output_path": str(folder / "one.gguf")})
    second = c.post(f"{E}/models/export", headers=headers, json={**body, "output_path": str(folder / "two.gguf")})
    assert second.json()["status"] == "queued", second.text
    r = c.post(f"{E}/jobs/{second.json()['job_id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert wait(c, first.json()["job_id"])["status"] == "completed"
    assert c.get("/store/v1/models/two").status_code == 404
    assert sorted(p.name for p in folder.iterdir()) == ["one.gguf"]


def test_an_export_cancelled_while_running_leaves_nothing(c, data, trained):
    """Cancelled in its merge or its quantizer (the child is stopped, its quantizer with it):
    no file, no partial, no folder it made, no model."""
    r = c.post(f"{E}/models/export", headers={"Prefer": "respond-async"},
               json={"model_id": "pw-a", "q_bits": 6, "output_path": str(data / "cancelled-export")})
    job = r.json()
    running = wait(c, job["job_id"], statuses=("running",))
    r = c.post(f"{E}/jobs/{job['job_id']}/cancel")
    assert r.status_code == 200, (running, r.text)  # a 409 would say it had completed already
    done = wait(c, job["job_id"])
    assert done["status"] == "cancelled", done
    assert not (data / "cancelled-export").exists()
    assert c.get(f"/store/v1/models/{job['output_model_id']}").status_code == 404


def test_a_job_running_when_the_server_died_is_failed(c, data, srv, trained):
    """A training and an export running when the server dies are failed when it starts
    again; neither leaves a model, nor the export a file or a partial one."""
    job = start(c, data, job_name="crashed", epochs=100)
    folder = data / "crash"
    folder.mkdir()
    exporting = c.post(f"{E}/models/export", headers={"Prefer": "respond-async"},
                       json={"model_id": "pw-a", "output_path": str(folder / "crash.gguf"), "q_bits": 8}).json()
    wait(c, job["job_id"], statuses=("running",))
    wait(c, exporting["job_id"], statuses=("running",))
    srv.kill()  # the server and its children, as a crash would
    srv.start()
    for j in (job, exporting):
        after = c.get(f"{E}/jobs/{j['job_id']}").json()
        assert after["status"] == "failed" and "server stopped" in after["error"], after
    assert c.get("/store/v1/models/crashed").status_code == 404
    assert c.get("/store/v1/models/crash").status_code == 404
    assert list(folder.iterdir()) == []
    assert not list((srv.store / "finetune" / "work").glob("*/adapter.gguf"))
    assert {j["id"] for j in c.get(f"{E}/jobs").json()} >= {job["job_id"], exporting["job_id"]}
