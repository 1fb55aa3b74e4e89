"""Many streams at once, disconnects, queueing behind full slots, prefix reuse, metrics."""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai

from conftest import AUTH, KEY

MSG = [{"role": "user", "content": "Tell me a story."}]
NO_EOS = {"151643": -100, "151645": -100, "128247": -100}


def _stream(client, n_tokens, seed, out, i):
    chunks = list(client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": f"Story {i}"}], max_tokens=n_tokens,
        temperature=0, seed=seed, stream=True, stream_options={"include_usage": True},
        logit_bias=NO_EOS))
    out[i] = chunks


def test_eight_concurrent_streams_all_finish(client):
    out = {}
    threads = [threading.Thread(target=_stream, args=(client, 40, i, out, i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(out) == 8
    for i, chunks in out.items():
        assert chunks[-1].usage.completion_tokens == 40
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    # each stream equals the same request made alone: batching does not mix sequences
    # (greedy, because batch composition moves logits in the last bits)
    alone = {}
    _stream(client, 40, 3, alone, 3)
    text = lambda cs: "".join(c.choices[0].delta.content or "" for c in cs if c.choices)  # noqa: E731
    assert text(alone[3]) == text(out[3])


def _metric(server, name, label='model="chat"'):
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_disconnect_stops_generation(start_server):
    server = start_server("--parallel", "1")
    before = _metric(server, "modelyard_generated_tokens_total")
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, timeout=60,
                      json={"model": "chat", "messages": MSG, "max_tokens": 400, "stream": True,
                            "logit_bias": NO_EOS}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in got)
    # the connection is closed; the slot must free and the count stop well short of 400
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _metric(server, "modelyard_active_sequences") != 0:
        time.sleep(0.1)
    assert _metric(server, "modelyard_active_sequences") == 0
    generated = _metric(server, "modelyard_generated_tokens_total") - before
    assert 0 < generated < 400
    # the only slot is free again: a new request is served at once
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    assert c.chat.completions.create(model="chat", messages=MSG, max_tokens=2).choices[0].finish_reason


def test_disconnect_stops_a_whole_answer(start_server):
    """A non-streamed answer writes nothing until it is whole, so no failed write tells the
    server its client has gone: it watches the socket, and frees the slot at once."""
    server = start_server("--parallel", "1", "--preload", "chat", "--init-context-size", "2048")
    server.wait_up("/readyz", 60)
    body = json.dumps({"model": "chat", "messages": MSG, "max_tokens": 1900, "logit_bias": NO_EOS}).encode()
    before = _metric(server, "modelyard_generated_tokens_total")
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _metric(server, "modelyard_active_sequences") != 1:
        time.sleep(0.02)
    time.sleep(0.3)  # generating, and nothing sent back yet
    assert _metric(server, "modelyard_active_sequences") == 1
    sock.close()
    closed = time.monotonic()
    while time.monotonic() < closed + 20 and _metric(server, "modelyard_active_sequences") != 0:
        time.sleep(0.02)
    freed = time.monotonic() - closed
    assert _metric(server, "modelyard_active_sequences") == 0
    assert freed < 1.5  # a 0.25 s watch and one decode step, not the rest of 1900 tokens
    generated = _metric(server, "modelyard_generated_tokens_total") - before
    assert 0 < generated < 1900
    assert _metric(server, "modelyard_requests_total", 'status="499"') == 1
    # the only slot is free again: a new request is served at once
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    assert c.chat.completions.create(model="chat", messages=MSG, max_tokens=2).choices[0].finish_reason


def test_request_behind_full_slots_waits_its_turn(start_server):
    server = start_server("--parallel", "2")
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    c.chat.completions.create(model="chat", messages=MSG, max_tokens=1)  # load
    results = {}

    def run(i):
        r = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": f"n{i}"}],
                                      max_tokens=60, logit_bias=NO_EOS)
        results[i] = r.usage.completion_tokens

    threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    seen_queue = 0.0
    while any(t.is_alive() for t in threads):
        seen_queue = max(seen_queue, _metric(server, "modelyard_queue_depth"))
        time.sleep(0.02)
    assert results == {i: 60 for i in range(5)}
    assert seen_queue >= 1  # some had to wait, and none was dropped


def test_prompt_prefix_is_reused(client, server):
    long_system = {"role": "system", "content": "You are a careful assistant. " * 20}
    first = client.chat.completions.create(model="chat", messages=[long_system, {"role": "user", "content": "a"}],
                                           max_tokens=2, temperature=0)
    second = client.chat.completions.create(model="chat", messages=[long_system, {"role": "user", "content": "b"}],
                                            max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens > 100
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 10


def test_metrics_exposed(client, server):
    client.chat.completions.create(model="chat", messages=MSG, max_tokens=3)
    text = httpx.get(server.url + "/metrics").text
    for name in ("modelyard_requests_total", "modelyard_prompt_tokens_total", "modelyard_generated_tokens_total",
                 "modelyard_time_to_first_token_seconds_bucket", "modelyard_tokens_per_second_bucket",
                 "modelyard_queue_depth", "modelyard_active_sequences", "modelyard_loaded_models"):
        assert name in text, name
    assert 'route="/v1/chat/completions",status="200"' in text
