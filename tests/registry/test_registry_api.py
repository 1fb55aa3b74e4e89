"""The registry (the mModelStore API) against a real gunicorn: every documented example, errors, auth."""
from __future__ import annotations

import hashlib

import httpx
import pytest

from support.modelfiles import make_gguf, make_onnx

PREFIXES = ["/store/v1", "/mimik-ai/store/v1"]
AUTH = {"Authorization": "Bearer 1234"}
SEED_LLM = {
    "id": "smollm2-360m",
    "version": "1.0.0",
    "kind": "llm",
    "gguf": {"chatTemplateHint": "chatml", "initContextSize": 2048, "initGpuLayerSize": 99},
}


def create(server, body, prefix="/store/v1"):
    return httpx.post(f"{server.url}{prefix}/models", json=body, headers=AUTH)


def upload(server, model_id, path, prefix="/store/v1", field="file"):
    with open(path, "rb") as f:
        return httpx.post(f"{server.url}{prefix}/models/{model_id}/upload",
                          files={field: (path.name, f)}, headers=AUTH, timeout=60)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_seed_two_step_provisioning(server, tmp_path, prefix):
    r = create(server, SEED_LLM, prefix)
    assert r.status_code == 201
    body = r.json()
    assert body["readyToUse"] is False
    assert {k: body[k] for k in ("id", "version", "kind", "gguf")} == SEED_LLM
    assert isinstance(body["createdAt"], int) and body["createdAt"] > 1_700_000_000_000

    gguf = make_gguf(tmp_path / "SmolLM2.gguf", 300_000)
    r = upload(server, "smollm2-360m", gguf, prefix)
    assert r.status_code == 200, r.text
    model = r.json()
    assert model["readyToUse"] is True
    assert model["totalSize"] == gguf.stat().st_size
    assert model["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert model["createdAt"] == body["createdAt"]

    got = httpx.get(f"{server.url}{prefix}/models/smollm2-360m").json()
    assert got == model


def test_create_existing_id_updates_and_returns_200(server):
    assert create(server, SEED_LLM).status_code == 201
    r = create(server, {**SEED_LLM, "version": "2.0.0", "gguf": {"initContextSize": 4096}})
    assert r.status_code == 200
    assert r.json()["version"] == "2.0.0"
    assert r.json()["gguf"] == {"initContextSize": 4096}
    assert len(httpx.get(f"{server.url}/store/v1/models").json()["data"]) == 1


def test_list_filters(server, tmp_path):
    create(server, SEED_LLM)
    create(server, {"id": "nomic-embed-text", "version": "1.0.0", "kind": "embed",
                    "gguf": {"initContextSize": 8192}})
    create(server, {"id": "classifier", "version": "1.0.0", "kind": "onnx",
                    "onnx": {"executionProvider": "cpu"}})
    upload(server, "smollm2-360m", make_gguf(tmp_path / "a.gguf"))
    upload(server, "classifier", make_onnx(tmp_path / "c.onnx"))

    def ids(query):
        r = httpx.get(f"{server.url}/mimik-ai/store/v1/models{query}")
        assert r.status_code == 200
        return sorted(m["id"] for m in r.json()["data"])

    assert ids("") == ["classifier", "nomic-embed-text", "smollm2-360m"]
    assert ids("?kind=llm") == ["smollm2-360m"]
    assert ids("?ready=true") == ["classifier", "smollm2-360m"]
    assert ids("?ready=false") == ["nomic-embed-text"]
    assert ids("?kind=llm&ready=true") == ["smollm2-360m"]
    assert ids("?kind=embed&ready=true") == []
    for bad in ("?kind=gpt", "?ready=maybe"):
        r = httpx.get(f"{server.url}/store/v1/models{bad}")
        assert r.status_code == 400
        assert r.json()["error"]["code"] == 400


def test_update(server):
    create(server, SEED_LLM)
    r = httpx.put(f"{server.url}/store/v1/models", headers=AUTH, json={
        "id": "smollm2-360m", "action": "update",
        "gguf": {"initContextSize": 4096, "initGpuLayerSize": 99}})
    assert r.status_code == 200
    assert r.json()["gguf"] == {"initContextSize": 4096, "initGpuLayerSize": 99}
    assert httpx.get(f"{server.url}/store/v1/models/smollm2-360m").json()["gguf"]["initContextSize"] == 4096

    r = httpx.put(f"{server.url}/store/v1/models", headers=AUTH,
                  json={"id": "smollm2-360m", "action": "replace"})
    assert r.status_code == 400 and "action" in r.json()["error"]["message"]
    r = httpx.put(f"{server.url}/store/v1/models", headers=AUTH,
                  json={"id": "nope", "action": "update"})
    assert r.status_code == 404
    assert r.json() == {"error": {"code": 404, "message": "Model 'nope' not found"}}
    r = httpx.put(f"{server.url}/store/v1/models", headers=AUTH, json={
        "id": "smollm2-360m", "action": "update", "gguf": {"chatTemplateHint": "gpt-9"}})
    assert r.status_code == 400 and "chatTemplateHint" in r.json()["error"]["message"]


def test_delete_removes_files(server, tmp_path):
    create(server, SEED_LLM)
    upload(server, "smollm2-360m", make_gguf(tmp_path / "a.gguf"))
    folder = server.store / "models" / "smollm2-360m"
    assert (folder / "model.gguf").exists()
    r = httpx.delete(f"{server.url}/store/v1/models/smollm2-360m", headers=AUTH)
    assert r.status_code == 204
    assert not folder.exists()
    assert httpx.get(f"{server.url}/store/v1/models/smollm2-360m").status_code == 404
    assert httpx.delete(f"{server.url}/store/v1/models/smollm2-360m", headers=AUTH).status_code == 404


def test_alt_media_streams_file_and_honours_range(server, tmp_path):
    create(server, SEED_LLM)
    gguf = make_gguf(tmp_path / "a.gguf", 200_000)
    data = gguf.read_bytes()
    upload(server, "smollm2-360m", gguf)
    url = f"{server.url}/store/v1/models/smollm2-360m?alt=media"
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == data
    assert r.headers["accept-ranges"] == "bytes"
    r = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = httpx.get(url, headers={"Range": "bytes=-50"})
    assert r.status_code == 206 and r.content == data[-50:]
    r = httpx.get(url, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == data[1000:]
    r = httpx.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert r.status_code == 416


def test_alt_media_of_model_without_file_is_400(server):
    create(server, SEED_LLM)
    r = httpx.get(f"{server.url}/store/v1/models/smollm2-360m?alt=media")
    assert r.status_code == 400
    assert "readyToUse" in r.json()["error"]["message"]


def test_vlm_needs_both_files(server, tmp_path):
    create(server, {"id": "llava-1.6", "version": "1.0.0", "kind": "vlm"})
    r = upload(server, "llava-1.6", make_gguf(tmp_path / "m.gguf"))
    assert r.status_code == 200 and r.json()["readyToUse"] is False
    r = upload(server, "llava-1.6", make_gguf(tmp_path / "p.gguf", seed=1), field="mmproj")
    assert r.status_code == 200 and r.json()["readyToUse"] is True
    files = sorted(p.name for p in (server.store / "models" / "llava-1.6").iterdir())
    assert "mmproj.gguf" in files and "model.gguf" in files
    assert r.json()["totalSize"] == sum(
        (tmp_path / n).stat().st_size for n in ("m.gguf", "p.gguf"))


# ---- errors --------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"version": "1", "kind": "llm"}, "id"),
    ({"id": "a", "kind": "llm"}, "version"),
    ({"id": "a", "version": "1"}, "kind"),
    ({"id": "a", "version": "1", "kind": "gpt"}, "kind"),
    ({"id": 5, "version": "1", "kind": "llm"}, "id"),
    ({"id": "a", "version": 1, "kind": "llm"}, "version"),
    ({"id": "a", "version": "1", "kind": "llm", "gguf": "big"}, "gguf"),
    ({"id": "a", "version": "1", "kind": "llm", "gguf": {"initContextSize": "4k"}}, "initContextSize"),
    ({"id": "a", "version": "1", "kind": "llm", "gguf": {"initContextSize": True}}, "initContextSize"),
    ({"id": "a", "version": "1", "kind": "llm", "gguf": {"chatTemplateHint": "nope"}}, "chatTemplateHint"),
    ({"id": "a", "version": "1", "kind": "onnx", "onnx": {"executionProvider": "tpu"}}, "executionProvider"),
    ({"id": "a", "version": "1", "kind": "llm", "colour": "red"}, "colour"),
])
def test_bad_bodies_name_the_field(server, body, field):
    r = create(server, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == 400
    assert field in err["message"]
    assert httpx.get(f"{server.url}/store/v1/models").json()["data"] == []


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b"", b"\xff\xfe", b'"id"'])
def test_malformed_json_is_400(server, raw):
    r = httpx.post(f"{server.url}/store/v1/models", content=raw, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 400


def test_body_over_limit_is_413(server_factory):
    server = server_factory(api_key="1234", args=("--max-body-size", "1024"))
    body = {**SEED_LLM, "version": "x" * 2000}
    r = httpx.post(f"{server.url}/store/v1/models", json=body, headers=AUTH)
    assert r.status_code == 413
    assert "1024" in r.json()["error"]["message"]


def test_upload_over_limit_is_413_and_leaves_nothing(server_factory, tmp_path):
    server = server_factory(api_key="1234", args=("--max-upload-size", "10000"))
    create(server, SEED_LLM)
    r = upload(server, "smollm2-360m", make_gguf(tmp_path / "a.gguf", 50_000))
    assert r.status_code == 413
    folder = server.store / "models" / "smollm2-360m"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["model.json"]


@pytest.mark.parametrize("model_id", [".hidden", "-dash", "a..b", "x" * 256, "sp ace", "semi;colon"])
def test_invalid_ids_are_400_on_every_route(server, model_id):
    r = create(server, {"id": model_id, "version": "1", "kind": "llm"})
    assert r.status_code == 400 and "id" in r.json()["error"]["message"]
    quoted = httpx.URL(f"{server.url}/store/v1/models/").join(model_id.replace(" ", "%20"))
    assert httpx.get(quoted).status_code == 400
    assert httpx.delete(quoted, headers=AUTH).status_code == 400


@pytest.mark.parametrize("path", ["..%2F..%2Fetc%2Fpasswd", "..%2Fmodels", "%2e%2e", "a/../../b"])
def test_traversal_never_escapes(server, path):
    r = httpx.get(f"{server.url}/store/v1/models/{path}")
    assert r.status_code in (400, 404)
    assert "error" in r.json()
    r = httpx.delete(f"{server.url}/store/v1/models/{path}", headers=AUTH)
    assert r.status_code in (400, 404)
    assert server.store.exists() and server.store.parent.exists()


def test_max_length_id_is_fine(server):
    model_id = "m" * 255
    assert create(server, {"id": model_id, "version": "1", "kind": "llm"}).status_code == 201
    assert httpx.get(f"{server.url}/store/v1/models/{model_id}").status_code == 200


def test_unknown_model_is_404_in_seed_shape(server, tmp_path):
    r = httpx.get(f"{server.url}/store/v1/models/unknown-model")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": 404, "message": "Model 'unknown-model' not found"}}
    assert upload(server, "unknown-model", make_gguf(tmp_path / "a.gguf")).status_code == 404


def test_auth_on_mutations(server, tmp_path):
    url = f"{server.url}/store/v1/models"
    r = httpx.post(url, json=SEED_LLM)
    assert r.status_code == 401 and r.json()["error"]["code"] == 401
    r = httpx.post(url, json=SEED_LLM, headers={"Authorization": "Bearer 12345"})
    assert r.status_code == 403 and r.json()["error"]["code"] == 403
    r = httpx.post(url, json=SEED_LLM, headers={"Authorization": "Basic 1234"})
    assert r.status_code == 401
    assert httpx.get(url).json()["data"] == []
    assert create(server, SEED_LLM).status_code == 201
    for method, path in [("PUT", ""), ("DELETE", "/smollm2-360m"), ("POST", "/smollm2-360m/upload")]:
        r = httpx.request(method, url + path, json={}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 403, (method, path)
    # Reads need no key.
    assert httpx.get(f"{url}/smollm2-360m").status_code == 200


def test_no_key_serves_loopback_only(server_factory, tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "modelyard.server.cli", "serve", "--host", "0.0.0.0",
         "--store", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode != 0
    assert "API key" in r.stderr and "127.0.0.1" in r.stderr
    server = server_factory()  # loopback, no key: mutations are open
    assert create(server, SEED_LLM).status_code == 201


# ---- files -------------------------------------------------------------------------


def test_non_gguf_upload_is_400_and_not_ready(server, tmp_path):
    create(server, SEED_LLM)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    r = upload(server, "smollm2-360m", junk)
    assert r.status_code == 400 and "GGUF" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/store/v1/models/smollm2-360m").json()["readyToUse"] is False
    assert not list((server.store / "models" / "smollm2-360m").glob("*.gguf*"))


def test_truncated_gguf_is_refused(server, tmp_path):
    create(server, SEED_LLM)
    good = make_gguf(tmp_path / "a.gguf", 100_000)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:60_000])
    r = upload(server, "smollm2-360m", cut)
    assert r.status_code == 400, r.text
    assert httpx.get(f"{server.url}/store/v1/models/smollm2-360m").json()["readyToUse"] is False


def test_onnx_must_load(server, tmp_path):
    create(server, {"id": "clf", "version": "1", "kind": "onnx"})
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    assert upload(server, "clf", bad).status_code == 400
    assert httpx.get(f"{server.url}/store/v1/models/clf").json()["readyToUse"] is False
    r = upload(server, "clf", make_onnx(tmp_path / "ok.onnx"))
    assert r.status_code == 200 and r.json()["readyToUse"] is True


def test_failed_reupload_keeps_the_good_file(server, tmp_path):
    create(server, SEED_LLM)
    good = make_gguf(tmp_path / "a.gguf")
    upload(server, "smollm2-360m", good)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"nope" * 100)
    assert upload(server, "smollm2-360m", junk).status_code == 400
    model = httpx.get(f"{server.url}/store/v1/models/smollm2-360m").json()
    assert model["readyToUse"] is True
    assert httpx.get(f"{server.url}/store/v1/models/smollm2-360m?alt=media").content == good.read_bytes()


def test_upload_field_errors(server, tmp_path):
    create(server, SEED_LLM)
    r = upload(server, "smollm2-360m", make_gguf(tmp_path / "a.gguf"), field="model")
    assert r.status_code == 400 and "'model'" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/store/v1/models/smollm2-360m/upload", headers=AUTH,
                   content=b"raw bytes")
    assert r.status_code == 415
    r = upload(server, "smollm2-360m", make_gguf(tmp_path / "p.gguf"), field="mmproj")
    assert r.status_code == 400 and "llm" in r.json()["error"]["message"]
