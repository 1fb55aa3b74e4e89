"""Pure pieces, tested directly: slot choice, stop strings, tool-call parsing, OIP, validation."""
from __future__ import annotations

import json
import math
import re
import socket

import numpy as np
import pytest

from modelyard.server.api.kserve import codec as oip
from modelyard.server.api.openai import format as openai_format
from modelyard.server.inference import chat_templates, grammar, tool_calls
from modelyard.server.shared import facts
from modelyard.server.inference.llama.embedder import pack
from modelyard.server.inference.llama.streams import TextAssembler
from modelyard.server.inference.llama.slots import choose_slot, common_prefix, plan_batch
from modelyard.server.inference.dispatch import fit_tokens
from modelyard.server.inference.errors import BadRequest
from modelyard.server.http.disconnect import peer_closed
from modelyard.server.api.openai.schema import RequestError, parse_chat, parse_completion, parse_embeddings


def test_slot_choice_prefers_longest_prefix_then_lru():
    free = [(0, [1, 2, 3], 5.0), (1, [1, 2, 3, 4, 5], 9.0), (2, [], 1.0)]
    assert choose_slot(free, [1, 2, 3, 4, 9]) == (1, 4)
    assert choose_slot(free, [7, 8]) == (2, 0)  # nothing shared: least recently used
    # a prompt entirely cached still leaves its last token to decode
    assert choose_slot(free, [1, 2, 3]) == (0, 2) or choose_slot(free, [1, 2, 3])[1] == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_plan_batch_gives_generating_slots_priority():
    assert plan_batch([0, 1], [(2, 100), (3, 5)], 50) == [(0, 1), (1, 1), (2, 48)]
    assert plan_batch([], [(2, 10), (3, 5)], 50) == [(2, 10), (3, 5)]


def test_text_assembler_holds_back_possible_stops():
    pieces = {1: b"Hel", 2: b"lo ST", 3: b"OP now", 4: "é".encode()[:1], 5: "é".encode()[1:]}
    t = TextAssembler(pieces.__getitem__, ["STOP"])
    assert t.feed(1) == "Hel"
    assert t.feed(2) == "lo "  # "ST" may start STOP
    assert t.feed(3) == "" and t.stopped and t.text == "Hello "
    u = TextAssembler(pieces.__getitem__)
    assert u.feed(4) == "" and u.feed(5) == "é"


def test_tool_call_parsing():
    content, calls = tool_calls.parse('Sure.<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', {"f"})
    assert content == "Sure." and calls[0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    content, calls = tool_calls.parse('{"name": "f", "arguments": {"a": 2}}', {"f"})
    assert content is None and len(calls) == 1
    assert tool_calls.parse('{"name": "g", "arguments": {}}', {"f"}) == ('{"name": "g", "arguments": {}}', [])
    assert tool_calls.parse("plain text", {"f"}) == ("plain text", [])
    assert tool_calls.may_become_call("<tool") and not tool_calls.may_become_call("Hello")


def test_every_hint_renders_with_llama_cpp():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    for hint in facts.CHAT_TEMPLATE_HINTS:
        p = chat_templates.format_chat(msgs, hint=hint, gguf_template=None)
        assert "U" in p.text and p.add_special
    with pytest.raises(chat_templates.TemplateError):
        chat_templates.format_chat(msgs, hint=None, gguf_template=None)
    with pytest.raises(chat_templates.TemplateError):
        chat_templates.format_chat(msgs, hint="nope", gguf_template=None)


def test_jinja_template_and_tools_fallback():
    tmpl = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
    tools = [{"type": "function", "function": {"name": "f"}}]
    p = chat_templates.format_chat([{"role": "user", "content": "hi"}], hint=None, gguf_template=tmpl,
                                   bos_token="<s>", tools=tools)
    assert p.text.startswith("<s>[system]") and '"name": "f"' in p.text and p.text.endswith("[user]hi")
    assert not p.add_special


def test_fit_tokens():
    assert fit_tokens(10, None, 100) == 90
    assert fit_tokens(10, 5, 100) == 5
    with pytest.raises(BadRequest) as e:  # the engines' own error; the API layer makes it a 400
        fit_tokens(90, 20, 100)
    message = str(e.value)
    assert e.value.code == 400
    assert "100 tokens" in message and "90" in message and "110" in message


def test_request_validation():
    r = parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "END",
                    "max_completion_tokens": 5, "logprobs": True, "top_logprobs": 2,
                    "stream_options": {"include_usage": True}})
    assert r.stop == ["END"] and r.max_tokens == 5 and r.logprobs == 2 and r.include_usage
    for bad in ({"model": "m", "messages": "x"}, {"model": "m", "messages": [{"role": "user"}]},
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 2},
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"a": 1}}):
        with pytest.raises(RequestError):
            parse_chat(bad)
    assert parse_completion({"model": "m", "prompt": ["a", "b"]}).prompts == ["a", "b"]
    assert parse_completion({"model": "m", "prompt": [1, 2]}).prompts == [[1, 2]]
    assert parse_embeddings({"model": "m", "input": [[1, 2], [3]]}).inputs == [[1, 2], [3]]
    with pytest.raises(RequestError):
        parse_embeddings({"model": "m", "input": ""})


def test_grammars():
    assert "root" in grammar.for_response_format({"type": "json_object"})
    assert grammar.for_response_format({"type": "text"}) is None
    with pytest.raises(grammar.SchemaError):
        grammar.for_response_format({"type": "json_schema"})
    assert '"\\"get\\""' in grammar.for_tool_call([{"type": "function", "function": {"name": "get"}}])


def _gbnf_regex(expr: str) -> re.Pattern:
    """The GBNF subset integer_range writes (literals, classes, groups, {m,n}) as a regex."""
    return re.compile(re.sub(r'"([^"]*)"', lambda m: re.escape(m[1]), expr).replace(" ", ""))


@pytest.mark.parametrize("lo,hi", [(0, 9), (5, 5), (-5, 5), (18, 130), (-130, -18), (7, 1234), (None, 5),
                                   (3, None), (-20, None), (None, -3), (100, 999), (-1, 0), (99, 100),
                                   (-1000, 1000), (1, 10 ** 16 - 1)])
def test_integer_range_matches_exactly_the_integers_in_range(lo, hi):
    r = _gbnf_regex(grammar.integer_range(lo, hi))
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi
    for v in [*range(-2100, 2100), 10 ** 15, grammar.INT_LIMIT, -grammar.INT_LIMIT]:
        assert bool(r.fullmatch(str(v))) == (low <= v <= high), v
    assert not r.fullmatch("007") and not r.fullmatch("-0") and not r.fullmatch("1.0")


def test_schema_bounds_in_the_grammar():
    g = grammar.for_schema({"type": "object", "required": ["s", "i", "a", "v"], "properties": {
        "s": {"type": "string", "minLength": 2, "maxLength": 5000},
        "i": {"type": "integer", "exclusiveMinimum": 0, "maximum": 9},
        "a": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "boolean"}},
        "v": {"type": "array", "maxItems": 2},
        "n": {"type": ["integer", "null"], "minimum": 7, "maximum": 7}}})
    rules = dict(line.split(" ::= ", 1) for line in g.splitlines())
    assert rules["s"] == '"\\"" char{2,5000} "\\"" space'  # llama.cpp repeats; not 5000 nested groups
    assert rules["i"] == "([1-9]) space"
    assert rules["a"] == '"[" space boolean ("," space boolean){0,2} "]" space'
    assert rules["v"] == '"[" space (value ("," space value)?)? "]" space'  # no items: any value
    assert rules["n"] == "n-0 | null" and rules["n-0"] == '("7") space'  # bounds kept per type
    # JSON strings take no raw control characters, and minLength counts code points
    assert rules["char"].startswith('[^"\\\\\\x00-\\x1F]')
    for draft4, want in (({"minimum": 3, "exclusiveMinimum": True}, (4, None)),
                         ({"maximum": 3.5, "exclusiveMaximum": True}, (None, 3))):
        assert grammar.integer_bounds(draft4, "x") == want


@pytest.mark.parametrize("schema,keyword", [({"type": "number", "minimum": 0}, "'minimum'"),
                                            ({"type": "number", "exclusiveMaximum": 1.5}, "'exclusiveMaximum'"),
                                            ({"type": "integer", "multipleOf": 5}, "'multipleOf'"),
                                            ({"type": "string", "pattern": "^a+$", "maxLength": 3}, "'pattern'"),
                                            ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
                                            ({"type": "array", "minItems": 3, "maxItems": 2}, "'minItems'")])
def test_bounds_a_grammar_cannot_hold_are_refused(schema, keyword):
    with pytest.raises(grammar.SchemaError) as e:
        grammar.for_response_format({"type": "json_schema", "json_schema": {"schema": {
            "type": "object", "properties": {"x": schema}}}})
    assert keyword in str(e.value) and "'x'" in str(e.value)


def test_tool_parameters_keep_unenforceable_bounds_as_hints():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "number", "minimum": 0}}}}}]
    assert "number" in grammar.for_tool_call(tools)


def test_peer_closed_on_real_sockets():
    a, b = socket.socketpair()
    with a:
        assert not peer_closed(a)  # open and quiet
        b.sendall(b"GET")
        assert not peer_closed(a) and a.recv(3) == b"GET"  # a peek leaves the bytes there
        b.close()
        assert peer_closed(a)


def test_embedding_packing():
    assert pack([5, 5, 5, 5], 10, 64) == [[0, 1], [2, 3]]
    assert pack([1] * 5, 100, 2) == [[0, 1], [2, 3], [4]]


def test_embedding_floats_are_short_and_exact():
    from modelyard.server.http.jsonio import dumps

    rng = np.random.default_rng(0)
    v = rng.standard_normal((4, 384)).astype(np.float32)
    v[0, :6] = [0.0, -0.0, 1e-40, 3.4e38, np.float32(0.1), np.float32(1 / 3)]
    body = dumps(openai_format.embedding_list("m", v, "float", 1)).decode()
    back = np.array([d["embedding"] for d in json.loads(body)["data"]], dtype=np.float32)
    assert np.array_equal(back, v)  # every value reads back as the same float32
    assert max(len(repr(x)) for x in json.loads(body)["data"][0]["embedding"]) <= 16
    assert '"embedding":[0.0,-0.0,' in body and ",0.1,0.33333334," in body


def test_oip_decode_and_encode():
    spec = [oip.TensorSpec("x", "FP32", (-1, 2))]
    feeds = oip.decode_inputs({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                           "data": [[1, 2], [3, 4]]}]}, spec)
    assert feeds["x"].dtype == np.float32 and feeds["x"].shape == (2, 2)
    for bad, word in (({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [0] * 6}, "shape"),
                      ({"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}, "datatype"),
                      ({"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1]}, "elements"),
                      ({"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}, "not an input")):
        with pytest.raises(oip.OipError) as e:
            oip.decode_inputs({"inputs": [bad]}, spec)
        assert word in str(e.value) and "'" in str(e.value)
    out = oip.encode_tensor("y", np.array([[1, 2]], dtype=np.int8))
    assert out == {"name": "y", "shape": [1, 2], "datatype": "INT8", "data": [1, 2]}
    assert oip.encode_tensor("s", np.array(["a"], dtype=object))["datatype"] == "BYTES"
