"""Silicon Studio's engine API (/api/engine, seed 001) from a plain HTTP client against a real
gunicorn: models registered by path and by scan, downloads from the Hugging Face stand-in,
load with a quantized KV cache, SSE chat parsed event by event with its prefix cache, stop,
and predict's priority over streaming chats."""
from __future__ import annotations

import base64
import json
import shutil
import statistics
import threading
import time

import httpx
import pytest

import modelgen
from conftest import AUTH, CTX, provision
from support.hubs import FileHub
from support.servers import Server

E = "/api/engine"
REPO = "org/tiny-GGUF"
SLOW = "org/slow-GGUF"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = tmp_path_factory.mktemp("silicon-hub")
    with FileHub() as hub:
        hub.add_hf(REPO, "tiny-Q8_0.gguf",
                   modelgen.make_llama_gguf(d / "q8.gguf", vocab="qwen2", qtype="Q8_0", seed=3).read_bytes())
        hub.add_hf(REPO, "tiny-F16.gguf",
                   modelgen.make_llama_gguf(d / "f16.gguf", vocab="qwen2", qtype="F16", seed=4).read_bytes())
        hub.add_hf(REPO, "README.md", b"# tiny\n")
        # a slow one, to watch its progress and cancel it
        hub.add_hf(SLOW, "slow-Q4_K_M.gguf", (d / "f16.gguf").read_bytes(), rate=2_000_000)
        yield hub


@pytest.fixture(scope="module")
def srv(tmp_path_factory, model_files, hub):
    """A server and store of its own: registrations and stops must not reach other tests."""
    root = tmp_path_factory.mktemp("silicon")
    server = Server(root / "store", api_key="1234", env={"HF_ENDPOINT": hub.url},
                    args=("--threads", "2", "--parallel", "4",
                          "--allow-path", str(tmp_path_factory.getbasetemp())),  # registers tmp files
                    log_path=root / "server.log").start()
    provision(server, model_files, ids={"chat"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def c(srv):
    with httpx.Client(base_url=srv.url, headers=AUTH, timeout=120) as client:
        yield client


def models(c) -> dict[str, dict]:
    r = c.get(f"{E}/models")
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()}


def chat_events(c, body: dict, on_event=None) -> list[dict]:
    """POST /chat, the SSE stream parsed event by event (each a `data:` line and a blank line)."""
    events = []
    with c.stream("POST", f"{E}/chat", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        for text in r.iter_text():
            buffer += text
            while "\n\n" in buffer:
                frame, buffer = buffer.split("\n\n", 1)
                if frame.startswith(":"):
                    continue  # a keep-alive comment
                assert frame.startswith("data: "), frame
                events.append(json.loads(frame[len("data: "):]))
                if on_event is not None:
                    on_event(events[-1])
        assert buffer == ""
    return events


def test_auth_and_errors(srv, c):
    assert httpx.get(f"{srv.url}{E}/models").status_code == 401
    r = c.post(f"{E}/models/load", json={"model_id": "nope"})
    # the /api/ routes' {"error"}, and FastAPI's {"detail"} that the app's client reads
    assert r.status_code == 404
    assert r.json() == {"error": "Model 'nope' not found", "detail": "Model 'nope' not found"}
    # Unloading a model that is not there is the same 404, and the document says it may be
    # (`make fuzz` found it undocumented).
    r = c.post(f"{E}/models/unload", json={"model_id": "nope"})
    assert r.status_code == 404 and r.json()["error"] == "Model 'nope' not found"
    assert "404" in c.get("/openapi.json").json()["paths"][f"{E}/models/unload"]["post"]["responses"]
    r = c.post(f"{E}/models/load", json={"model_id": "chat", "kv_quantization": 3})
    assert r.status_code == 400 and "kv_quantization" in r.json()["error"]
    assert c.get(f"{E}/models/adapters").json() == []


def test_register_a_file_by_path_then_delete_it(c, model_files, tmp_path):
    user = shutil.copyfile(model_files["chat"], tmp_path / "My Chat.gguf")
    r = c.post(f"{E}/models/register", json={"name": "My Chat", "path": str(user),
                                                 "url": "https://huggingface.co/org/chat"})
    assert r.status_code == 200, r.text
    model = r.json()["model"]
    assert model["id"] == "My-Chat" and model["is_custom"] is True and model["status"] == "ready"
    assert (model["path"], model["size"], model["url"]) == (str(user), user.stat().st_size,
                                                           "https://huggingface.co/org/chat")
    # the rest of the system sees it: the registry (whose file it serves), and Ollama's list
    store = c.get("/store/v1/models/My-Chat").json()
    assert store["registeredPath"] == str(user) and store["readyToUse"] is True
    assert c.get("/store/v1/models/My-Chat?alt=media", headers={"Range": "bytes=0-3"}).content == b"GGUF"
    assert "My-Chat:latest" in [m["name"] for m in c.get("/api/tags").json()["models"]]
    r = c.post(f"{E}/models/delete", json={"model_id": "My-Chat"})
    assert r.status_code == 200 and r.json()["status"] == "deleted"
    assert user.exists() and user.read_bytes() == model_files["chat"].read_bytes()
    assert "My-Chat" not in models(c)
    r = c.post(f"{E}/models/register", json={"name": "x", "path": "relative/x.gguf"})
    assert r.status_code == 400 and "absolute" in r.json()["error"]


def test_a_registered_file_that_changes_is_not_ready_and_never_served(c, model_files, tmp_path):
    user = shutil.copyfile(model_files["chat"], tmp_path / "moving.gguf")
    assert c.post(f"{E}/models/register", json={"name": "moving", "path": str(user)}).status_code == 200
    r = c.post(f"{E}/models/load", json={"model_id": "moving"})
    assert r.status_code == 200, r.text
    assert "moving" in [m["id"] for m in c.get("/v1/models").json()["data"]]
    with open(user, "r+b") as f:  # rewritten in place, as an editor or a copy would
        f.seek(user.stat().st_size // 2)
        f.write(b"\0" * 64)
        f.write(b"more")
    entry = models(c)["moving"]
    assert entry["status"] == "not_ready" and entry["downloaded"] is False
    assert "changed on disk" in entry["error"]
    r = c.post(f"{E}/predict", json={"model_id": "moving", "prompt": "def f(", "max_tokens": 4})
    assert r.status_code == 400 and "changed on disk" in r.json()["error"]
    assert c.get("/store/v1/models/moving?alt=media").status_code == 400
    # the engine that had the old file open is gone, not serving a torn file
    assert "moving" not in [m["id"] for m in c.get("/v1/models").json()["data"]]
    user.unlink()
    assert "is gone" in models(c)["moving"]["error"]
    assert c.post(f"{E}/models/delete", json={"model_id": "moving"}).status_code == 200


def test_scan_registers_good_files_pairs_projectors_and_says_why_it_skips(srv, c, model_files, tmp_path):
    root = tmp_path / "library"
    (root / "text").mkdir(parents=True)
    (root / "vision").mkdir()
    shutil.copyfile(model_files["plain"], root / "text" / "plain-q8.gguf")
    (root / "text" / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 100)
    whole = model_files["plain"].read_bytes()
    (root / "text" / "half.gguf").write_bytes(whole[: len(whole) // 2])
    (root / "text" / "readme.md").write_text("not a model")
    shutil.copyfile(model_files["vlm-text"], root / "vision" / "llava-tiny.gguf")
    shutil.copyfile(model_files["mmproj"], root / "vision" / "mmproj-llava-tiny-f16.gguf")
    r = c.post(f"{E}/models/scan", json={"path": str(root)})
    assert r.status_code == 200, r.text
    got = {m["id"]: m for m in r.json()["registered"]}
    assert set(got) == {"plain-q8", "llava-tiny"}
    assert got["llava-tiny"]["is_vision"] is True and got["llava-tiny"]["kind"] == "vlm"
    assert got["llava-tiny"]["size"] == model_files["vlm-text"].stat().st_size + model_files["mmproj"].stat().st_size
    assert got["plain-q8"]["is_vision"] is False and got["plain-q8"]["status"] == "ready"
    skipped = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in r.json()["skipped"]}
    assert set(skipped) == {"broken.gguf", "half.gguf"}
    assert "truncated" in skipped["half.gguf"]
    # scanning again registers the same files in place, not as copies, and does not hash
    # unchanged files again (their records are not rewritten)
    record = srv.store / "models" / "plain-q8" / "model.json"
    before = record.stat().st_mtime_ns
    again = c.post(f"{E}/models/scan", json={"path": str(root)}).json()
    assert {m["id"] for m in again["registered"]} == {"plain-q8", "llava-tiny"}
    assert record.stat().st_mtime_ns == before
    # the vlm sees an image
    png = base64.b64encode(modelgen.make_png(32, 32, lambda x, y: (255, 0, 0))).decode()
    events = chat_events(c, {"model_id": "llava-tiny", "max_tokens": 4, "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What colour is this?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}]})
    assert events[-1]["done"] is True and events[-1]["usage"]["completion_tokens"] == 4
    assert events[-1]["usage"]["prompt_tokens"] > 20  # the image's tokens are in the prompt
    # the vlm loads with its projector, and the active model says so
    r = c.post(f"{E}/models/load", json={"model_id": "llava-tiny"})
    assert r.status_code == 200, r.text
    active = c.get(f"{E}/models/active").json()
    assert active["model"]["id"] == active["id"] == "llava-tiny"
    assert active["is_vision"] is True and active["architecture"] == "llama"
    assert active["context_window"] == r.json()["context_window"] > 0
    assert active["path"] == str(root / "vision" / "llava-tiny.gguf")
    r = c.post(f"{E}/models/unload")  # no body: the active one
    assert r.json()["status"] == "unloaded"
    assert c.get(f"{E}/models/active").json() == {"model": None}
    r = c.post(f"{E}/models/scan", json={"path": str(root / "nowhere")})
    assert r.status_code == 400 and "not a folder" in r.json()["error"]


def test_paths_outside_the_allowed_folders_get_one_answer(c, tmp_path):
    """Issue 19, item 5: outside --allow-path, every path gets the same 403 and message (its own
    path aside), whether it is a file, a folder, nothing, or a link from inside to outside."""
    (tmp_path / "to-file.gguf").symlink_to("/etc/hostname")
    (tmp_path / "to-folder").symlink_to("/etc")
    paths = ["/etc/passwd", "/etc/hostname", "/etc", "/nonexistent/model.gguf", "/proc/self/environ",
             str(tmp_path / "to-file.gguf"), str(tmp_path / "to-folder")]
    answers = set()
    for path in paths:
        for route, body in (("register", {"name": "x", "path": path}), ("scan", {"path": path})):
            r = c.post(f"{E}/models/{route}", json=body)
            answers.add((r.status_code, r.json()["error"].replace(path, "<path>")))
    assert len(answers) == 1, answers
    status, message = answers.pop()
    assert status == 403 and "--allow-path" in message
    r = c.post(f"{E}/models/scan", json={"path": "/"})  # registered every GGUF of the machine before
    assert r.status_code == 403, r.text


def test_errors_quote_no_bytes_and_list_no_names(c, tmp_path):
    secret = tmp_path / "notes.gguf"
    secret.write_bytes(b"SECRET-TOKEN=abc\n")
    r = c.post(f"{E}/models/register", json={"name": "x", "path": str(secret)})
    assert r.status_code == 400 and "SECR" not in r.text and "GGUF's magic" in r.json()["error"], r.text
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("alpha-private.gguf", "beta-private.gguf"):
        (folder / name).write_bytes(b"GGUF")
    r = c.post(f"{E}/models/register", json={"name": "x", "path": str(folder)})
    assert r.status_code == 400 and "holds 2" in r.text and "private" not in r.text, r.text


def test_a_scan_skips_a_file_registered_under_another_id(c, model_files, tmp_path):
    """One file is one model: a scan that would name it 'alpha' where a register named it
    'Alpha' says so instead of registering it twice."""
    root = tmp_path / "twins"
    root.mkdir()
    shutil.copyfile(model_files["plain"], root / "alpha.gguf")
    assert c.post(f"{E}/models/register", json={"name": "Alpha", "path": str(root / "alpha.gguf")}).status_code == 200
    before = set(models(c))
    r = c.post(f"{E}/models/scan", json={"path": str(root)})
    assert r.status_code == 200, r.text
    assert r.json()["registered"] == []
    assert r.json()["skipped"] == [{"path": str(root / "alpha.gguf"), "reason": "already registered as 'Alpha'"}]
    assert set(models(c)) == before


def test_a_scan_skips_fifos_links_out_and_folders_too_deep(c, tmp_path):
    import os

    root = tmp_path / "lib"
    deep = root.joinpath(*"abcdefghi")  # nine folders below the root: past the depth of eight
    deep.mkdir(parents=True)
    (deep / "deep.gguf").write_bytes(b"GGUF")
    os.mkfifo(root / "pipe.gguf")  # opened as a file, it blocked the request thread for ever
    (root / "out.gguf").symlink_to("/etc/hostname")
    r = c.post(f"{E}/models/scan", json={"path": str(root)}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["registered"] == []
    skipped = {s["path"]: s["reason"] for s in r.json()["skipped"]}
    assert skipped[str(root / "pipe.gguf")] == "it is not a regular file"
    assert "outside the allowed folders" in skipped[str(root / "out.gguf")]
    assert "8 folders deep" in skipped[str(root.joinpath(*"abcdefgh"))]
    assert str(deep / "deep.gguf") not in skipped


def test_format_reads_the_tokenizer_metadata(c):
    r = c.get(f"{E}/models/chat/format")
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["model_type"] == "llama" and f["has_chat_template"] is True
    assert f["eos_token"] == "<|im_end|>" or f["eos_token"] == "<|endoftext|>"
    assert f["tokenizer_model"] == "gpt2" and f["vocab_size"] > 100000
    assert "im_start" in f["chat_template"]
    assert c.get(f"{E}/models/nope/format").status_code == 404


def test_download_from_the_hub_in_the_background(c, hub):
    r = c.post(f"{E}/models/download", json={"model_id": REPO})
    assert r.status_code == 202, r.text
    model_id = r.json()["model_id"]
    deadline = time.monotonic() + 60
    while (entry := models(c).get(model_id)) is None or entry["status"] == "downloading":
        assert time.monotonic() < deadline, entry
        time.sleep(0.1)
    assert entry["status"] == "ready", entry
    # Q8_0 is preferred to F16 when the repo has no Q4 file
    assert [g.path for g in hub.gets("/resolve/") if g.path.endswith(".gguf")][-1].endswith("tiny-Q8_0.gguf")
    assert entry["url"] == f"https://huggingface.co/{REPO}" and entry["is_custom"] is False
    # a file named explicitly, and a repo that has no such file: the failure shows in the list
    r = c.post(f"{E}/models/download", json={"model_id": f"{REPO}/missing-Q2_K.gguf"})
    failed_id = r.json()["model_id"]
    deadline = time.monotonic() + 30
    while (entry := models(c).get(failed_id)) is None or entry["status"] == "downloading":
        assert time.monotonic() < deadline, entry
        time.sleep(0.1)
    assert entry["status"] == "failed" and "missing-Q2_K.gguf" in entry["error"]
    assert c.post(f"{E}/models/delete", json={"model_id": failed_id}).status_code == 200
    assert failed_id not in models(c)
    assert c.post(f"{E}/models/delete", json={"model_id": model_id}).status_code == 200


def test_download_progress_shows_and_delete_cancels_it(srv, c):
    r = c.post(f"{E}/models/download", json={"model_id": SLOW})
    assert r.status_code == 202, r.text
    model_id = r.json()["model_id"]
    deadline = time.monotonic() + 30
    while not ((entry := models(c).get(model_id)) and (entry["progress"] or {}).get("downloaded")):
        assert time.monotonic() < deadline, entry
        time.sleep(0.05)
    assert entry["status"] == "downloading" and entry["downloaded"] is False
    progress = entry["progress"]
    assert 0 < progress["downloaded"] < progress["total"] and 0 < progress["percent"] < 100
    assert c.post(f"{E}/models/download", json={"model_id": SLOW}).status_code == 409  # one at a time
    assert c.post(f"{E}/models/delete", json={"model_id": model_id}).status_code == 200
    time.sleep(1.5)  # the cancelled download must not come back
    assert model_id not in models(c)
    assert not (srv.store / "models" / model_id).exists()


def test_load_with_a_quantized_kv_cache(c, tmp_path):
    from test_kv_cache import make_model_file  # head size 64: q8_0 and q4_0 blocks fit

    path = make_model_file(tmp_path)
    assert c.post(f"{E}/models/register", json={"name": "kvq", "path": str(path)}).status_code == 200
    for bits, kv_type in ((8, "q8_0"), (4, "q4_0"), (None, "f16")):
        body = {"model_id": "kvq"} if bits is None else {"model_id": "kvq", "kv_quantization": bits}
        r = c.post(f"{E}/models/load", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["kv_cache_type"] == kv_type and r.json()["architecture"] == "llama"
        assert r.json()["context_window"] > 0
        assert models(c)["kvq"]["is_loaded"] is True
        assert c.get(f"{E}/models/active").json()["id"] == "kvq"
    r = c.post(f"{E}/models/unload", json={"model_id": "kvq"})
    assert r.json()["status"] == "unloaded" and models(c)["kvq"]["is_loaded"] is False
    assert c.post(f"{E}/models/unload", json={"model_id": "kvq"}).json()["status"] == "not_loaded"
    r = c.post(f"{E}/models/load", json={"model_id": "chat"})
    assert r.status_code == 200 and r.json()["context_window"] == CTX


def test_chat_streams_text_events_and_reuses_the_conversation_prefix(c):
    first = [{"role": "user", "content": "Tell me a story about a cat and a dog."}]
    events = chat_events(c, {"model_id": "chat", "messages": first, "max_tokens": 12, "temperature": 0})
    *texts, final = events
    assert texts and all(set(e) == {"text"} and e["text"] for e in texts)
    assert final["done"] is True and final["stopped"] is False and final["finish_reason"] == "length"
    usage = final["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12
    answer = "".join(e["text"] for e in texts)
    second = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And then?"}]
    final2 = chat_events(c, {"model_id": "chat", "messages": second, "max_tokens": 4, "temperature": 0})[-1]
    # the next turn re-evaluates only what is new: the first turn's prompt is in the slot
    assert final2["usage"]["cached_tokens"] >= usage["prompt_tokens"]
    assert final2["usage"]["prompt_tokens"] > final2["usage"]["cached_tokens"]


def test_chat_takes_images_up_to_20_mb(c):
    big = "data:image/png;base64," + "A" * (27 * 1000 * 1000)  # 20.25 MB once decoded
    body = {"model_id": "chat", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": big}}]}]}
    r = c.post(f"{E}/chat", json=body)
    assert r.status_code == 413 and "20 MB" in r.json()["error"]
    png = "data:image/png;base64," + base64.b64encode(modelgen.make_png(8, 8, lambda x, y: (255, 0, 0))).decode()
    body["messages"][0]["content"][1]["image_url"]["url"] = png
    r = c.post(f"{E}/chat", json=body)  # a text model takes no image
    assert r.status_code == 400 and "takes no images" in r.json()["error"]


def test_stop_ends_a_long_generation_cleanly(c):
    stopped = {}

    def on_event(event):
        if len(stopped) == 0 and "text" in event:
            stopped["texts"] = 0
        if "text" in event:
            stopped["texts"] += 1
            if stopped["texts"] == 5:
                stopped["at"] = time.monotonic()
                stopped["reply"] = c.post(f"{E}/chat/stop")

    body = {"model_id": "chat", "messages": [{"role": "user", "content": "Count to a thousand."}],
            "max_tokens": 400, "temperature": 0.8, "seed": 1}
    events = chat_events(c, body, on_event)
    ended = time.monotonic()
    assert stopped["reply"].status_code == 200
    assert stopped["reply"].json()["status"] == "stopped" and stopped["reply"].json()["stopped"] == 1
    final = events[-1]
    assert final["done"] is True and final["stopped"] is True and final["finish_reason"] == "stopped"
    texts = [e for e in events if "text" in e]
    # within a decode step or so of the stop, far short of max_tokens
    assert 5 <= len(texts) <= 12 and final["usage"]["completion_tokens"] < 20
    assert ended - stopped["at"] < 2
    # with nothing streaming, a stop stops nothing
    assert c.post(f"{E}/chat/stop", json={"model_id": "chat"}).json()["stopped"] == 0


def _predict_seconds(c) -> float:
    started = time.monotonic()
    r = c.post(f"{E}/predict", json={"model_id": "chat", "prompt": "def fibonacci(n):", "max_tokens": 16})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["text"], str) and r.json()["text"]
    return time.monotonic() - started


def test_predict_is_not_queued_behind_streaming_chats(srv, c):
    r = c.post(f"{E}/predict", json={"model_id": "chat", "prompt": "def add(a, b):", "max_tokens": 8})
    assert r.status_code == 200 and set(r.json()) == {"text"}
    # greedy: the same suggestion each time
    again = c.post(f"{E}/predict", json={"model_id": "chat", "prompt": "def add(a, b):", "max_tokens": 8})
    assert again.json() == r.json()
    alone = statistics.median(_predict_seconds(c) for _ in range(9))

    started = threading.Barrier(5)
    finished = []

    def stream(i):
        # Greedy: a predict waits at most for the step in flight, and a step of four chats
        # that sample with top_p over this vocabulary of 152k tokens costs far more than a
        # greedy one; the test is of the scheduling, not of the sampler.
        body = {"model_id": "chat", "messages": [{"role": "user", "content": f"Write essay {i}."}],
                "max_tokens": 450, "temperature": 0}
        seen = []

        def on_event(event):
            if "text" in event and not seen:
                seen.append(1)
                started.wait(60)
        with httpx.Client(base_url=srv.url, headers=AUTH, timeout=120) as client:
            finished.append(chat_events(client, body, on_event)[-1])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait(60)  # all four slots are generating
    busy = statistics.median(_predict_seconds(c) for _ in range(9))
    assert len(finished) == 0, "the chats ended before the predicts were measured"
    for t in threads:
        t.join(120)
    assert [f["finish_reason"] for f in finished] == ["length"] * 4
    assert busy <= 2 * alone, f"predict took {busy:.3f}s with 4 chats streaming, {alone:.3f}s alone"


def test_ids_from_repos():
    from modelyard.server.api.silicon.engine import id_from_repo
    from modelyard.server.registry.errors import InvalidFile

    assert id_from_repo("org/tiny-GGUF") == ("org--tiny-GGUF", "org/tiny-GGUF", None)
    assert id_from_repo("bartowski/Qwen3-GGUF/sub/Qwen3-Q4_K_M.gguf") == (
        "bartowski--Qwen3-Q4_K_M", "bartowski/Qwen3-GGUF", "sub/Qwen3-Q4_K_M.gguf")
    with pytest.raises(InvalidFile, match="org/repo"):
        id_from_repo("just-a-name")
    with pytest.raises(InvalidFile, match="MLX"):
        id_from_repo("mlx-community/Qwen3-1.7B-MLX-8bit/model.safetensors")
