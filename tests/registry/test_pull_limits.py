"""What a hostile registry can send to /api/pull: bodies past their declared sizes, endless
streams, sizes no disk holds, and layers that do not match their digests. Each pull fails
cleanly (nothing listed, nothing left in the store) and reads only about as much as it
allowed. Against the real server and the tests' own registry on 127.0.0.2 (conftest.py)."""
from __future__ import annotations

import json

import httpx
import pytest

from support.hubs import COMMIT
from support.registries import AUTH, Reply, leftovers, listed, pull

MODEL = "application/vnd.ollama.image.model"
PROJECTOR = "application/vnd.ollama.image.projector"
TEMPLATE = "application/vnd.ollama.image.template"
PARAMS = "application/vnd.ollama.image.params"
CONFIG = b'{"model_format":"gguf","model_family":"llama"}'
MB = 1 << 20
# What a refused body may have cost: the limit (at most 4 MiB), plus what the sockets'
# buffers took in before the server closed the connection. Far below the 64 MiB offered.
READ_BOUND = 16 * MB
OFFERED = 64 * MB


def short(media_type: str) -> str:
    return media_type.rsplit(".", 1)[-1]


def name_of(hostile, repository: str) -> str:
    return f"{hostile.host}/{repository}:1"


def assert_failed_cleanly(server, name: str) -> None:
    assert name not in listed(server)
    assert leftovers(server, name) == []


def test_a_sound_model_pulls(egress_server, hostile, gguf_files):
    """The baseline of the tests below: the same registry, honest, is pulled from."""
    hostile.model("lim/sound", "1", [(MODEL, gguf_files["model"]), (PROJECTOR, gguf_files["projector"]),
                                     (TEMPLATE, b"{{ .Prompt }}"), (PARAMS, b'{"temperature": 0.5}')],
                  config=CONFIG)
    r = pull(egress_server, name_of(hostile, "lim/sound"))
    assert r.status_code == 200 and r.json() == {"status": "success"}, r.text
    assert name_of(hostile, "lim/sound") in listed(egress_server)


# ---- limits (issue 19, item 3) ---------------------------------------------------------------

def test_an_endless_manifest_is_refused_at_its_limit(egress_server, hostile):
    reply = hostile.set("GET", "/v2/lim/endless/manifests/1", stream=OFFERED, length="")
    r = pull(egress_server, name_of(hostile, "lim/endless"))
    assert r.status_code == 502 and "manifest" in r.json()["error"], r.text
    assert reply.sent < READ_BOUND, f"the server read {reply.sent} bytes of an endless manifest"
    assert_failed_cleanly(egress_server, name_of(hostile, "lim/endless"))


@pytest.mark.parametrize("length", ["", str(OFFERED)], ids=["unsized", "sized"])
def test_a_text_layer_past_its_declared_size_is_refused(egress_server, hostile, gguf_files, length):
    """200 MiB behind a 100-byte template once added 392 MiB to the server (issue 19)."""
    repo = f"lim/template-{len(length)}"
    hostile.model(repo, "1", [(MODEL, gguf_files["model"]), (TEMPLATE, b"t" * 100)])
    reply = hostile.set("GET", hostile.blob_path(repo, b"t" * 100), stream=OFFERED, length=length)
    r = pull(egress_server, name_of(hostile, repo))
    assert r.status_code == 502 and "declared size" in r.json()["error"], r.text
    assert reply.sent < READ_BOUND, f"the server read {reply.sent} bytes of a 100-byte layer"
    assert_failed_cleanly(egress_server, name_of(hostile, repo))


@pytest.mark.parametrize("length", ["", str(OFFERED)], ids=["unsized", "sized"])
def test_a_model_layer_stops_at_its_declared_size(egress_server, hostile, gguf_files, length):
    """The model layer's declared size bounds what is written: a longer body is refused
    before the disk gets it (an endless one would fill it)."""
    repo = f"lim/model-{len(length)}"
    hostile.model(repo, "1", [(MODEL, gguf_files["model"])])
    reply = hostile.set("GET", hostile.blob_path(repo, gguf_files["model"]), stream=OFFERED, length=length)
    r = pull(egress_server, name_of(hostile, repo))
    assert r.status_code == 502 and "declared" in r.json()["error"], r.text
    assert reply.sent < READ_BOUND, f"the server took {reply.sent} bytes of a {len(gguf_files['model'])}-byte layer"
    assert_failed_cleanly(egress_server, name_of(hostile, repo))


def test_a_model_larger_than_the_free_space_is_refused_before_a_byte(egress_server, hostile, gguf_files):
    repo = "lim/huge"
    hostile.model(repo, "1", [(MODEL, gguf_files["model"])], sizes={MODEL: 1 << 50})
    before = len(hostile.log)
    r = pull(egress_server, name_of(hostile, repo))
    assert r.status_code == 507 and "disk space" in r.json()["error"], r.text
    assert ("GET", hostile.blob_path(repo, gguf_files["model"])) not in hostile.log[before:]
    assert_failed_cleanly(egress_server, name_of(hostile, repo))


def test_a_hub_file_past_its_listed_size_is_refused(egress_server, hostile):
    """Mullama's (and Ollama's hf.co) pulls: the hub's listing declares the size, and a
    file that runs past it stops there. The hostile registry is also the server's HF_ENDPOINT."""
    repo, file = "org/liar-GGUF", "liar-Q8_0.gguf"
    listing = [{"type": "file", "path": file, "size": 1000, "oid": "0" * 40}]
    hostile.set("GET", f"/api/models/{repo}/tree/main", body=json.dumps(listing).encode(),
                headers={"Content-Type": "application/json"})
    replies = [hostile.set("GET", f"/{repo}/resolve/{rev}/{file}", stream=OFFERED,
                           headers={"ETag": '"liar"', "X-Repo-Commit": COMMIT}) for rev in ("main", COMMIT)]
    r = httpx.post(f"{egress_server.url}/api/models/pull", headers=AUTH, timeout=60,
                   json={"name": f"hf:{repo}", "stream": False})
    assert r.status_code == 502 and "declared" in r.json()["error"]["message"], r.text
    sent = sum(reply.sent for reply in replies)
    assert sent < READ_BOUND, f"the server took {sent} bytes of a file listed at 1000"
    assert_failed_cleanly(egress_server, "hf.co/org/liar-GGUF:latest")


# ---- integrity (issue 19, item 10): each check, with a layer that breaks it -------------------

def tamper(data: bytes) -> bytes:
    """Other bytes of the same length that are as valid as `data`: a GGUF's last tensor byte
    flipped, a text's last digit 2 made a 7. Only the digest check can tell them apart."""
    if data.startswith(b"GGUF"):
        return data[:-1] + bytes([data[-1] ^ 1])
    i = data.rindex(b"2")
    return data[:i] + b"7" + data[i + 1:]


LAYERS_WITH_DIGITS = {TEMPLATE: b"{{ .System }} {{ .Prompt }} 2", PARAMS: b'{"temperature": 0.25}'}
CONFIG_WITH_DIGIT = b'{"model_format":"gguf","model_family":"llama","n":2}'


@pytest.mark.parametrize("target", [MODEL, PROJECTOR, TEMPLATE, PARAMS, "config"], ids=short)
def test_a_layer_that_does_not_match_its_digest_fails_the_pull(egress_server, hostile, gguf_files, target):
    """Each layer, with its bytes swapped for others as valid: without its digest check the
    pull would succeed (Probllama's class of bug)."""
    repo = f"int/{target.rsplit('.', 1)[-1]}"
    layers = [(MODEL, gguf_files["model"]), (PROJECTOR, gguf_files["projector"]), *LAYERS_WITH_DIGITS.items()]
    manifest = hostile.model(repo, "1", layers, config=CONFIG_WITH_DIGIT)
    entry = manifest["config"] if target == "config" else next(l for l in manifest["layers"]
                                                                 if l["mediaType"] == target)
    data = CONFIG_WITH_DIGIT if target == "config" else dict(layers)[target]
    hostile.set("GET", f"/v2/{repo}/blobs/{entry['digest']}", Reply(body=tamper(data)))
    r = pull(egress_server, name_of(hostile, repo))
    assert r.status_code in (400, 502), r.text
    assert any(word in r.json()["error"] for word in ("digest", "sha256")), r.text
    assert_failed_cleanly(egress_server, name_of(hostile, repo))


@pytest.mark.parametrize("twice", [MODEL, TEMPLATE], ids=short)
def test_a_manifest_that_names_a_layer_twice_is_refused(egress_server, hostile, gguf_files, twice):
    repo = f"int/twice-{twice.rsplit('.', 1)[-1]}"
    other = {MODEL: tamper(gguf_files["model"]), TEMPLATE: b"{{ .Prompt }} again"}[twice]
    layers = [(MODEL, gguf_files["model"]), (TEMPLATE, b"{{ .Prompt }}")]
    manifest = hostile.model(repo, "1", layers + [(twice, other)], config=CONFIG)
    assert [l["mediaType"] for l in manifest["layers"]].count(twice) == 2
    r = pull(egress_server, name_of(hostile, repo))
    assert r.status_code == 502 and "twice" in r.json()["error"], r.text
    assert_failed_cleanly(egress_server, name_of(hostile, repo))


def test_the_pulled_layers_are_what_the_manifest_named(egress_server, hostile, gguf_files):
    """The checks above guard this: a sound pull records the template and parameters sent."""
    r = pull(egress_server, name_of(hostile, "lim/sound"))
    assert r.status_code == 200, r.text
    shown = httpx.post(f"{egress_server.url}/api/show", headers=AUTH,
                       json={"model": name_of(hostile, "lim/sound")}).json()
    assert shown["template"] == "{{ .Prompt }}"
    assert "temperature" in shown["parameters"] and json.dumps(0.5) in shown["parameters"]
