"""One response path for every family (issue 21): a client that hangs up on a non-streamed
request frees its slot within a few decode steps, whatever the API, and every family's
stream sends its own keep-alive while the request waits for a slot.

One server with one decode slot, the chat model preloaded with room for long answers.
"""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from conftest import AUTH, KEY

MSG = [{"role": "user", "content": "Tell me a story."}]
NO_EOS = {"151643": -100, "151645": -100}
LONG = 1900  # tokens (the test model was trained for 2048): far more than the few decode steps a hang-up may cost

# A non-streamed request of each family that generates LONG tokens.
WHOLE = {
    "openai-chat": ("/v1/chat/completions", {"model": "chat", "messages": MSG, "max_tokens": LONG,
                                             "logit_bias": NO_EOS}),
    "openai-completions": ("/v1/completions", {"model": "chat", "prompt": "Once", "max_tokens": LONG,
                                               "logit_bias": NO_EOS}),
    "anthropic": ("/v1/messages", {"model": "chat", "max_tokens": LONG, "messages": MSG}),
    "ollama-generate": ("/api/generate", {"model": "chat", "prompt": "Once", "stream": False,
                                          "options": {"num_predict": LONG}}),
    "ollama-chat": ("/api/chat", {"model": "chat", "messages": MSG, "stream": False,
                                  "options": {"num_predict": LONG}}),
    "silicon-predict": ("/api/engine/predict", {"model_id": "chat", "prompt": "Once", "max_tokens": LONG}),
}

# A streamed request of each family, and how its keep-alive reads.
STREAMED = {
    "openai": ("/v1/chat/completions", {"model": "chat", "messages": MSG, "max_tokens": 4, "stream": True},
               lambda line: line == ": ping"),
    "anthropic": ("/v1/messages", {"model": "chat", "max_tokens": 4, "messages": MSG, "stream": True},
                  lambda line: line == "event: ping"),
    "ollama": ("/api/chat", {"model": "chat", "messages": MSG, "options": {"num_predict": 4}},
               lambda line: _ndjson(line) is not None and _ndjson(line).get("done") is False
               and _ndjson(line)["message"]["content"] == ""),
    "silicon": ("/api/engine/chat", {"model_id": "chat", "messages": MSG, "max_tokens": 4},
                lambda line: line == ": ping"),
}


def _ndjson(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def one_slot(start_server):
    server = start_server("--parallel", "1", "--preload", "chat", "--init-context-size", "2048",
                          "--keepalive-seconds", "0.3")
    server.wait_up("/readyz", 180)
    return server


def _metric(server, name: str, label: str = 'model="chat"') -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_active(server, n: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _metric(server, "modelyard_active_sequences") == n:
            return True
        time.sleep(0.02)
    return False


def _send(server, path: str, body: dict) -> socket.socket:
    """A request sent over a raw socket, its answer never read: the client of a
    non-streamed request that hangs up when it closes the socket."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


@pytest.mark.parametrize("family", list(WHOLE))
def test_a_hang_up_frees_the_slot_of_a_whole_answer(one_slot, family):
    path, body = WHOLE[family]
    assert _wait_active(one_slot, 0, 20)
    before = _metric(one_slot, "modelyard_generated_tokens_total")
    sock = _send(one_slot, path, body)
    assert _wait_active(one_slot, 1, 20), "the request never started"
    time.sleep(0.3)  # generating, and nothing sent back yet
    assert _metric(one_slot, "modelyard_active_sequences") == 1
    sock.close()
    closed = time.monotonic()
    assert _wait_active(one_slot, 0, 20)
    assert time.monotonic() - closed < 1.5  # the client watch and one decode step, not LONG tokens
    generated = _metric(one_slot, "modelyard_generated_tokens_total") - before
    assert 0 < generated < LONG


@pytest.mark.parametrize("family", list(STREAMED))
def test_a_stream_waiting_for_a_slot_gets_keep_alives(one_slot, family):
    path, body, is_keep_alive = STREAMED[family]
    assert _wait_active(one_slot, 0, 20)
    blocker = _send(one_slot, *WHOLE["openai-chat"])  # holds the only slot
    try:
        assert _wait_active(one_slot, 1, 20)
        seen = []
        with httpx.stream("POST", one_slot.url + path, json=body, headers=AUTH, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                seen.append(line)
                if is_keep_alive(line):
                    break
                assert len(seen) < 5, seen  # a keep-alive comes first: no token can, the slot is busy
        assert is_keep_alive(seen[-1]), seen
    finally:
        blocker.close()
