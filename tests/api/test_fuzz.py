"""Schemathesis against the served OpenAPI document, on a real gunicorn with real models.

Every generated request, valid or not, must get a response that is not a 5xx and that
matches the document: its status is documented, its content type too, and its body fits
the schema. `make test` runs a bounded run; `make fuzz` runs more (MODELYARD_FUZZ_EXAMPLES).
"""
from __future__ import annotations

import os

import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

# Per operation and mode (valid and invalid requests); about 70 operations, so 5 each keeps
# make test's run near the 560 requests it made with 40 operations and 7 each.
EXAMPLES = int(os.environ.get("MODELYARD_FUZZ_EXAMPLES", "5"))
MIN_CASES = int(os.environ.get("MODELYARD_FUZZ_MIN_CASES", "300"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

def _operations(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    for result in schema.get_all_operations():
        op = result.ok()
        # Downloads and pulls would try the network (there is none here) and wait for its
        # timeouts; tests/inference/test_ollama_transfers.py and test_mullama.py cover pulls
        # with stand-ins. A scan of a generated folder ("/") would walk the whole machine and
        # register the GGUFs it finds; tests/inference/test_silicon.py scans folders of its own.
        if not op.path.endswith(("/download", "/api/pull", "/api/models/pull", "/use", "/models/scan")):
            yield op


# In positive mode, requests to the inference routes name a real model half of the time,
# so generated sampling settings, prompts and tensors reach the engines.
REAL = {"/chat/completions": "chat", "/completions": "chat", "/embeddings": "embed", "/v1/models": "chat",
        "/openai/v1/models": "chat", "/v1/messages": "chat", "/v1/messages/count_tokens": "chat"}


def _aim(case, use_real: bool):
    if not use_real or case.path.startswith(("/store/", "/mimik-ai/store/")):
        return case
    if case.path.startswith("/v2/models/"):
        case.path_parameters = {**(case.path_parameters or {}), "model_id": "clf"}
    elif isinstance(case.body, dict) and "model" in case.body:
        real = next((m for suffix, m in REAL.items() if case.path.endswith(suffix)), None)
        if real:
            case.body = {**case.body, "model": real}
    return case


def test_every_response_is_documented_and_not_5xx(fuzz_server):
    calls: list[tuple[str, str, int]] = []
    failures: list[str] = []
    for mode in GenerationMode:
        for op in _operations(fuzz_server):
            strategy = op.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE:
                strategy = st.tuples(strategy, st.booleans()).map(lambda pair: _aim(*pair))

            @given(case=strategy)
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call(headers=fuzz_server.auth, timeout=120)
                calls.append((case.method, case.path, response.status_code))
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # Negative mode has nothing to break in an operation without inputs.
                assert mode is GenerationMode.NEGATIVE, op.path
            except Exception as exc:  # one operation's failure must not hide the others'
                failures.append(f"{mode.value} {op.method.upper()} {op.path}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= MIN_CASES, f"only {len(calls)} generated requests were sent"
    assert not [c for c in calls if c[2] >= 500]
    assert fuzz_server.proc.poll() is None, "the server died"
