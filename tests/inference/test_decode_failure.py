"""A failed llama_decode: the stream in flight ends with an SSE error event and no finish,
and the engine goes on serving. MODELYARD_TEST_FAIL_DECODE=<n> (read once, in the engines'
test hooks; the runner process inherits it) makes the n-th decode of the runner fail."""
from __future__ import annotations

import json

import httpx

from conftest import AUTH

NO_EOS = {"151643": -100, "151645": -100}


def test_a_failed_decode_ends_the_stream_with_an_error_event(start_server):
    # Decode 1 is the prompt; decodes 2 and 3 give tokens; decode 4 fails.
    server = start_server("--parallel", "2", env={"MODELYARD_TEST_FAIL_DECODE": "4"})
    body = {"model": "chat", "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 40,
            "temperature": 0, "logit_bias": NO_EOS, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=AUTH, json=body,
                      timeout=120) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    parsed = [json.loads(e) for e in events if e != "[DONE]"]
    content = [p for p in parsed if "error" not in p and p["choices"] and p["choices"][0]["delta"].get("content")]
    errors = [p for p in parsed if "error" in p]
    assert len(content) >= 1  # the tokens before the failure were sent
    assert len(errors) == 1 and "llama_decode failed" in errors[0]["error"]["message"], events[-3:]
    assert parsed.index(errors[0]) == len(parsed) - 1  # nothing after it
    assert not any(p["choices"][0].get("finish_reason") for p in parsed if "error" not in p and p["choices"])
    # The engine lives on: the next request is whole.
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=120,
                   json={**body, "stream": False, "max_tokens": 8})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
