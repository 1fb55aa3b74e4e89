"""Each GGUF model's engine runs in a runner process: a crash or a hang there costs only that
model's requests; the server says why, counts it, and starts a new runner on the next request."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import httpx
import openai
import pytest

from conftest import AUTH, KEY
from support import procs

MSG = [{"role": "user", "content": "Tell me a story."}]
NO_EOS = {"151643": -100, "151645": -100}


def _metric(server, name, label='model="chat"'):
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait(predicate, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _client(server, timeout=60):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=timeout)


def _stream_lines(server, out: list, max_tokens=480):
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, timeout=120,
                      json={"model": "chat", "messages": MSG, "max_tokens": max_tokens, "stream": True,
                            "logit_bias": NO_EOS}) as r:
        for line in r.iter_lines():
            out.append(line)


@pytest.fixture
def fresh(start_server):
    server = start_server("--parallel", "2")
    c = _client(server)
    c.chat.completions.create(model="chat", messages=MSG, max_tokens=1)
    c.embeddings.create(model="embed", input="warm")
    return server


def test_a_crashed_runner_fails_only_its_own_requests(fresh):
    server = fresh
    worker = procs.worker_of(server.proc.pid)
    runners = procs.runners(server.proc.pid)
    assert set(runners) == {"chat", "embed"}
    lines: list[str] = []
    stream = threading.Thread(target=_stream_lines, args=(server, lines))
    stream.start()
    assert _wait(lambda: sum(line.startswith("data: ") for line in lines) > 5)
    # An upload in progress meanwhile: its body arrives in pieces, around the crash.
    httpx.post(server.url + "/store/v1/models", headers=AUTH,
               json={"id": "late", "version": "1", "kind": "embed"}).raise_for_status()
    upload_result = {}

    def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.gguf\"\r\n\r\n"
        data = open(server.store / "models" / "embed" / "model.gguf", "rb").read()
        half = len(data) // 2
        yield data[:half]
        time.sleep(1.0)  # the crash happens here
        yield data[half:]
        yield b"\r\n--b--\r\n"

    def upload():
        size = sum(len(p) for p in body())
        r = httpx.post(server.url + "/store/v1/models/late/upload", content=body(), timeout=60,
                       headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b",
                                "Content-Length": str(size)})
        upload_result["r"] = r

    up = threading.Thread(target=upload)
    up.start()
    time.sleep(0.3)
    os.kill(runners["chat"], signal.SIGSEGV)
    stream.join(60)
    up.join(60)
    # the stream ends with an error event that says what happened
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    err = events[-1]["error"]
    assert err["code"] == 503 and "stopped (signal 11, SIGSEGV)" in err["message"], err
    assert "restarts on the next request" in err["message"]
    # the same worker, the other model's runner untouched, the upload done
    assert procs.worker_of(server.proc.pid) == worker
    assert procs.runners(server.proc.pid).get("embed") == runners["embed"]
    assert upload_result["r"].status_code == 200 and upload_result["r"].json()["readyToUse"]
    c = _client(server)
    assert len(c.embeddings.create(model="embed", input="still here").data[0].embedding) > 0
    assert _metric(server, "modelyard_engine_restarts_total") == 1
    assert "engine for model chat stopped (signal 11, SIGSEGV)" in server.log()
    # the next request starts a new runner
    r = c.chat.completions.create(model="chat", messages=MSG, max_tokens=3)
    assert r.choices[0].finish_reason
    assert procs.runners(server.proc.pid)["chat"] != runners["chat"]


def test_a_crash_during_a_whole_answer_is_a_503(fresh):
    server = fresh
    pid = procs.runners(server.proc.pid)["chat"]
    result = {}

    def ask():
        try:
            _client(server).chat.completions.create(model="chat", messages=MSG, max_tokens=480,
                                                    logit_bias=NO_EOS)
        except openai.APIStatusError as exc:
            result["e"] = exc

    t = threading.Thread(target=ask)
    t.start()
    assert _wait(lambda: _metric(server, "modelyard_active_sequences") == 1)
    os.kill(pid, signal.SIGABRT)
    t.join(60)
    e = result["e"]
    assert e.status_code == 503 and "signal 6, SIGABRT" in e.message
    assert e.body["type"] == "server_error"


def test_a_hung_runner_is_killed_and_replaced(start_server):
    server = start_server("--parallel", "1", "--engine-hang-timeout", "3")
    c = _client(server)
    c.chat.completions.create(model="chat", messages=MSG, max_tokens=1)
    pid = procs.runners(server.proc.pid)["chat"]
    os.kill(pid, signal.SIGSTOP)  # a hang: the process lives, makes no step
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="chat", messages=MSG, max_tokens=5)
    assert e.value.status_code == 503 and "hung" in e.value.message
    assert 3 <= time.monotonic() - started < 20
    assert _wait(lambda: not procs.alive(pid), 10)
    assert _metric(server, "modelyard_engine_restarts_total") == 1
    assert c.chat.completions.create(model="chat", messages=MSG, max_tokens=3).choices[0].finish_reason


def test_unload_stops_the_runner_and_gives_memory_back(start_server):
    server = start_server("--parallel", "4")
    worker = procs.worker_of(server.proc.pid)
    c = _client(server)

    def load_and_unload() -> tuple[int, int]:
        c.chat.completions.create(model="chat", messages=MSG, max_tokens=2)
        pid = procs.runners(server.proc.pid)["chat"]
        runner_rss = procs.rss_bytes(pid)
        assert httpx.delete(server.url + "/v1/models/chat", headers=AUTH).status_code == 200
        assert _wait(lambda: not procs.alive(pid), 10)
        return pid, runner_rss

    load_and_unload()  # the first use imports llama.cpp's library into the server: once
    before = procs.rss_bytes(worker)
    pid, runner_rss = load_and_unload()
    after = procs.rss_bytes(worker)
    # The weights and the KV cache lived in the runner, which is gone; the server kept only
    # the vocabulary, freed with the model.
    assert after - before < 8 << 20, (before, after)
    assert runner_rss > 8 << 20
    assert "chat" not in procs.runners(server.proc.pid)


# ---- cancellation, counted in tokens the engine decoded -----------------------------

def _decoded(server):
    return _metric(server, "modelyard_decoded_tokens_total", 'phase="generate"')


def test_a_dropped_stream_decodes_at_most_a_few_more_tokens(start_server):
    """Streamed: each token is written as it comes, so a closed connection fails the next
    write or the one after; the runner then drops the sequence within one decode step."""
    server = start_server("--parallel", "1")
    _client(server).chat.completions.create(model="chat", messages=MSG, max_tokens=1)
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, timeout=60,
                      json={"model": "chat", "messages": MSG, "max_tokens": 480, "stream": True,
                            "logit_bias": NO_EOS}) as r:
        lines = r.iter_lines()
        for _ in range(20):
            next(lines)
        at_close = _decoded(server)
    assert _wait(lambda: _metric(server, "modelyard_active_sequences") == 0, 20)
    after = _decoded(server)
    # the metrics read itself takes a few ms of decoding: allow a handful
    assert after - at_close <= 12, (at_close, after)


def test_a_dropped_whole_answer_decodes_at_most_a_quarter_second_more(start_server):
    """Not streamed: nothing is written until the answer is whole, so the server watches the
    socket every 0.25 s; the runner drops the sequence within one decode step after that."""
    server = start_server("--parallel", "1", "--init-context-size", "2048", "--preload", "chat")
    server.wait_up("/readyz", 60)
    body = json.dumps({"model": "chat", "messages": MSG, "max_tokens": 1900, "logit_bias": NO_EOS}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert _wait(lambda: _decoded(server) > 20, 30, 0.01)
    t0, d0 = time.monotonic(), _decoded(server)
    time.sleep(1.0)
    rate = (_decoded(server) - d0) / (time.monotonic() - t0)  # tokens per second, measured here
    at_close = _decoded(server)
    sock.close()
    assert _wait(lambda: _metric(server, "modelyard_active_sequences") == 0, 20, 0.01)
    after = _decoded(server)
    assert after - at_close <= rate * 0.25 * 1.5 + 8, (rate, at_close, after)
