"""Embeddings (llama.cpp, pooled) and ONNX models through the KServe v2 protocol."""
from __future__ import annotations

import base64

import httpx
import numpy as np
import onnxruntime as ort

from conftest import AUTH


def test_embeddings_match_llama_cpp_python(client, model_files):
    import llama_cpp

    texts = ["The quick brown fox.", "A second sentence", "x"]
    r = client.embeddings.create(model="embed", input=texts)
    assert [d.index for d in r.data] == [0, 1, 2]
    ours = np.array([d.embedding for d in r.data])
    ref = llama_cpp.Llama(str(model_files["embed"]), embedding=True, verbose=False)
    theirs = np.array(ref.embed(texts, normalize=True))
    assert ours.shape == theirs.shape
    # same vectors up to float noise (different attention kernels and batch shapes)
    assert np.all(np.sum(ours * theirs, axis=1) > 0.99999)
    assert r.usage.prompt_tokens == sum(len(ref.tokenize(t.encode())) for t in texts)


def test_embeddings_single_string_token_arrays_and_base64(client, server):
    one = client.embeddings.create(model="embed", input="hello world").data[0].embedding
    assert abs(np.linalg.norm(one) - 1) < 1e-5
    raw = httpx.post(server.url + "/v1/embeddings", headers=AUTH,
                     json={"model": "embed", "input": "hello world", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, one, atol=1e-6)
    toks = client.embeddings.create(model="embed", input=[[101, 7592, 2088, 102]]).data[0].embedding
    assert np.dot(toks, one) > 0.99999  # bert-bge: [CLS] hello world [SEP]


def test_many_embeddings_in_one_request(client):
    texts = [f"sentence number {i} about things" for i in range(200)]
    r = client.embeddings.create(model="embed", input=texts)
    vecs = np.array([d.embedding for d in r.data])
    assert vecs.shape[0] == 200
    single = client.embeddings.create(model="embed", input=texts[123]).data[0].embedding
    assert np.dot(vecs[123], single) > 0.99999  # batching does not mix sequences


def _infer(server, model, body):
    return httpx.post(f"{server.url}/v2/models/{model}/infer", headers=AUTH, json=body)


def test_oip_result_equals_onnxruntime(server, model_files):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    r = _infer(server, "clf", {"id": "req-1", "inputs": [
        {"name": "x", "shape": [3, 4], "datatype": "FP32", "data": x.tolist()},
        {"name": "k", "shape": [1], "datatype": "INT64", "data": [3]}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "clf" and body["id"] == "req-1" and body["model_version"] == "1.0.0"
    sess = ort.InferenceSession(str(model_files["clf"]), providers=["CPUExecutionProvider"])
    y, z = sess.run(["y", "z"], {"x": x, "k": np.array([3], dtype=np.int64)})
    out = {o["name"]: o for o in body["outputs"]}
    assert out["y"]["datatype"] == "FP32" and out["y"]["shape"] == [3, 3]
    assert np.array_equal(np.array(out["y"]["data"], dtype=np.float32).reshape(3, 3), y)
    assert np.array_equal(np.array(out["z"]["data"], dtype=np.float32).reshape(3, 4), z)
    only = _infer(server, "clf", {"inputs": body_inputs(x), "outputs": [{"name": "z"}]}).json()
    assert [o["name"] for o in only["outputs"]] == ["z"]


def body_inputs(x):
    return [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()},
            {"name": "k", "shape": [1], "datatype": "INT64", "data": [1]}]


def test_oip_bytes_inputs(server):
    r = _infer(server, "strings", {"inputs": [{"name": "s", "shape": [3], "datatype": "BYTES",
                                               "data": ["yes", "no", "yes"]}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0] == {"name": "y", "shape": [3], "datatype": "BOOL", "data": [True, False, True]}


def test_oip_wrong_shape_and_dtype_name_the_input(server):
    r = _infer(server, "clf", {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5},
                                          {"name": "k", "shape": [1], "datatype": "INT64", "data": [1]}]})
    assert r.status_code == 400 and "'x'" in r.json()["error"] and "shape" in r.json()["error"]
    r = _infer(server, "clf", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4},
                                          {"name": "k", "shape": [1], "datatype": "FP32", "data": [1]}]})
    assert r.status_code == 400 and "'k'" in r.json()["error"] and "INT64" in r.json()["error"]
    assert isinstance(r.json()["error"], str)  # OIP's error shape


def test_oip_metadata_ready_and_health(server):
    meta = httpx.get(server.url + "/v2/models/clf", headers=AUTH).json()
    assert meta["platform"] == "onnx_onnxv1" and meta["versions"] == ["1.0.0"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                              {"name": "k", "datatype": "INT64", "shape": [1]}]
    assert httpx.get(server.url + "/v2/models/clf/ready", headers=AUTH).status_code == 200
    assert httpx.get(server.url + "/v2/models/nope/ready", headers=AUTH).status_code == 404
    assert httpx.get(server.url + "/v2/health/live", headers=AUTH).json() == {"live": True}
    assert httpx.get(server.url + "/v2/models/chat", headers=AUTH).status_code == 400  # not onnx


def test_missing_execution_provider_falls_back_with_a_warning(server):
    # "clf" asks for cuda; this machine has none
    assert httpx.get(server.url + "/v2/models/clf", headers=AUTH).status_code == 200
    assert "executionProvider 'cuda'" in server.log() and "running on cpu" in server.log()
