"""Models registered by path: checked and hashed where they lie, never copied, never deleted,
and not ready (with a reason) as soon as the file on disk is not the one that was verified."""
from __future__ import annotations

import hashlib
import os
import shutil

import httpx
import pytest

from modelyard.server.registry import registered
from modelyard.server.registry.errors import InvalidFile, TransferBusy
from modelyard.server.registry.store import Store
from support.modelfiles import make_gguf, make_pooling_gguf
from support.servers import Server

KEY = "1234"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _projector(path):
    """A GGUF whose architecture is clip: what an mmproj file is."""
    return make_gguf(path, arch="clip")


def test_a_file_is_registered_where_it_lies(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "mine").mkdir()
    user = make_gguf(tmp_path / "mine" / "model-q4.gguf")
    view = store.register_path("mine", user)
    assert view["readyToUse"] is True
    assert view["kind"] == "llm"
    assert view["registeredPath"] == str(user)
    assert view["sha256"] == hashlib.sha256(user.read_bytes()).hexdigest()
    assert view["totalSize"] == user.stat().st_size
    assert store.file_path("mine") == user
    # nothing was copied: the model's folder holds only its metadata (and its lock)
    assert sorted(p.name for p in (tmp_path / "store/models/mine").iterdir()) <= [".lock", "model.json"]
    with store.open_file("mine") as f:
        assert f.read() == user.read_bytes()
    store.delete("mine")
    assert user.exists() and store.list() == []


def test_a_model_that_pools_is_an_embed_whatever_its_architecture(tmp_path):
    # llama.pooling_type, as an embedding model made from a decoder has: the kind comes
    # from the header's pooling key (derive.gguf_kind), as pulls and creates take it
    store = Store(tmp_path / "store")
    pools = make_pooling_gguf(tmp_path / "e5-mistral.gguf")
    assert store.register_path("e5", pools)["kind"] == "embed"
    assert store.register_path("e5-as-llm", pools, kind="llm")["kind"] == "embed"
    assert store.register_path("plain", make_gguf(tmp_path / "plain.gguf"))["kind"] == "llm"


def test_a_folder_with_a_projector_is_a_vlm(tmp_path):
    store = Store(tmp_path / "store")
    folder = tmp_path / "vision"
    folder.mkdir()
    model = make_gguf(folder / "Model-Q8_0.gguf")
    projector = _projector(folder / "mmproj-model-f16.gguf")
    view = store.register_path("vision", folder)
    assert (view["kind"], view["readyToUse"]) == ("vlm", True)
    assert store.file_path("vision") == model
    assert store.file_path("vision", "mmproj") == projector
    assert view["totalSize"] == model.stat().st_size + projector.stat().st_size


def test_a_changed_or_vanished_file_makes_the_model_not_ready(tmp_path):
    store = Store(tmp_path / "store")
    user = make_gguf(tmp_path / "m.gguf")
    store.register_path("m", user)
    assert store.get("m")["readyToUse"] is True  # cached view...
    with open(user, "ab") as f:  # ...which a change of the user's file must not hide
        f.write(b"\0" * 32)
    view = store.get("m")
    assert view["readyToUse"] is False
    assert "changed on disk" in view["notReadyReason"] and "size went from" in view["notReadyReason"]
    assert "sha256" not in view
    assert [m["readyToUse"] for m in store.list()] == [False]
    with pytest.raises(InvalidFile, match="changed on disk"):
        store.open_file("m")
    # rewritten at the same size: a new inode or mtime tells it apart
    make_gguf(tmp_path / "other.gguf", seed=3)
    os.replace(tmp_path / "other.gguf", user)
    assert store.get("m")["readyToUse"] is False
    user.unlink()
    assert "is gone" in store.get("m")["notReadyReason"]
    # registering again verifies the new file and makes it ready
    make_gguf(user, seed=4)
    assert store.register_path("m", user)["readyToUse"] is True


def test_what_cannot_be_registered(tmp_path):
    store = Store(tmp_path / "store")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(InvalidFile, match="not a usable GGUF"):
        store.register_path("bad", bad)
    good = make_gguf(tmp_path / "good.gguf")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(InvalidFile, match="truncated"):
        store.register_path("cut", truncated)
    with pytest.raises(InvalidFile, match="absolute"):
        store.register_path("rel", "good.gguf")
    with pytest.raises(InvalidFile, match="does not exist"):
        store.register_path("nope", tmp_path / "nope")
    with pytest.raises(InvalidFile, match="projector"):
        store.register_path("proj", _projector(tmp_path / "p.gguf"))
    assert store.list() == []  # nothing half-registered
    # an id whose files are in the store is not replaced by a registration
    store.create({"id": "stored", "version": "1", "kind": "llm"})
    with store.transfer("stored") as transfer:
        transfer.writer("model").write(good.read_bytes())
        transfer.commit()
    with pytest.raises(TransferBusy, match="files in the store"):
        store.register_path("stored", good)
    # nor while an upload to it runs (the folder's lock, any process)
    store.create({"id": "uploading", "version": "1", "kind": "llm"})
    with store.transfer("uploading"):
        with pytest.raises(TransferBusy, match="in progress"):
            store.register_path("uploading", good)
    assert store.get("uploading").get("registeredPath") is None
    # and a registered model takes no upload: its files are not the store's to replace
    store.register_path("reg", good)
    with pytest.raises(TransferBusy, match="registered by path"):
        with store.transfer("reg"):
            pass
    # a file inside the store is refused (deleting its model would pull it away)
    with pytest.raises(InvalidFile, match="inside the store"):
        store.register_path("again", store.file_path("stored"))


def test_scan_pairs_projectors_and_says_why_it_skips(tmp_path):
    root = tmp_path / "models"
    (root / "vision").mkdir(parents=True)
    (root / "text").mkdir()
    (root / "orphans").mkdir()
    good = make_gguf(root / "text" / "good.gguf")
    (root / "text" / "bad.gguf").write_bytes(b"GGUF" + b"\xff" * 60)
    (root / "text" / "cut.gguf").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (root / "text" / "notes.txt").write_text("not a model")
    vlm = make_gguf(root / "vision" / "llava-q4.gguf")
    projector = _projector(root / "vision" / "mmproj-llava-f16.gguf")
    lone = _projector(root / "orphans" / "mmproj-orphan.gguf")
    result = registered.scan(root)
    assert sorted((f.model, f.mmproj) for f in result.found) == sorted([(good, None), (vlm, projector)])
    skipped = {s["path"]: s["reason"] for s in result.skipped}
    assert set(skipped) == {str(root / "text" / "bad.gguf"), str(root / "text" / "cut.gguf"), str(lone)}
    assert "truncated" in skipped[str(root / "text" / "cut.gguf")]
    assert "no model" in skipped[str(lone)]


def test_pairing_in_a_folder_of_several_models():
    from pathlib import Path

    a, b = Path("/m/llava-7b.Q4.gguf"), Path("/m/qwen-vl.Q4.gguf")
    pa, pb = Path("/m/mmproj-llava-7b-f16.gguf"), Path("/m/qwen-vl-mmproj.gguf")
    found = {f.model: f.mmproj for f in registered.pair([a, b], [pb, pa])}
    assert found == {a: pa, b: pb}
    assert registered.id_for(Path("/x/My Model (Q4).gguf")) == "My-Model--Q4-"


def test_registered_models_through_the_registry_api(tmp_path):
    """/store/v1/models lists them, ?alt=media serves them (and refuses once they change),
    DELETE leaves the user's file."""
    store_dir = tmp_path / "store"
    user = make_gguf(tmp_path / "user.gguf", size_bytes=256 * 1024)
    Store(store_dir).register_path("by-path", user)
    server = Server(store_dir, api_key=KEY, log_path=tmp_path / "server.log").start()
    try:
        listed = httpx.get(f"{server.url}/store/v1/models").json()["data"]
        assert [(m["id"], m["readyToUse"], m["registeredPath"]) for m in listed] == [("by-path", True, str(user))]
        r = httpx.get(f"{server.url}/store/v1/models/by-path?alt=media")
        assert r.status_code == 200 and r.content == user.read_bytes()
        r = httpx.get(f"{server.url}/store/v1/models/by-path?alt=media", headers={"Range": "bytes=4-7"})
        assert r.status_code == 206 and r.content == user.read_bytes()[4:8]
        r = httpx.post(f"{server.url}/store/v1/models/by-path/upload", headers=AUTH,
                       files={"file": ("x.gguf", user.read_bytes())})
        assert r.status_code == 409 and "registered by path" in r.json()["error"]["message"]
        copy = tmp_path / "copy.gguf"
        shutil.copyfile(user, copy)
        with open(user, "r+b") as f:  # a rewrite in place, same size: mtime tells
            f.seek(100)
            f.write(b"\1\2\3\4")
            os.utime(user, ns=(1, 1))
        view = httpx.get(f"{server.url}/store/v1/models/by-path").json()
        assert view["readyToUse"] is False and "changed on disk" in view["notReadyReason"]
        r = httpx.get(f"{server.url}/store/v1/models/by-path?alt=media")
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
        r = httpx.delete(f"{server.url}/store/v1/models/by-path", headers=AUTH)
        assert r.status_code == 204
        assert user.exists() and user.stat().st_size == copy.stat().st_size
        assert httpx.get(f"{server.url}/store/v1/models").json()["data"] == []
    finally:
        server.stop()


def test_copies_of_a_registered_model_never_share_the_users_inode(tmp_path):
    """Ollama's copy of a registered model is a second registration; a model made from it
    (Ollama's create) gets its own file, so the user's edits in place cannot reach it."""
    store = Store(tmp_path / "store")
    user = make_gguf(tmp_path / "user.gguf")
    store.register_path("reg", user)
    copy = store.copy("reg", "reg2")
    assert copy["registeredPath"] == str(user) and copy["readyToUse"] is True
    store.delete("reg2")
    assert user.exists() and store.get("reg")["readyToUse"] is True
    store.create({"id": "derived", "version": "1", "kind": "llm"})
    with store.transfer("derived") as transfer:
        transfer.place("model", store.file_path("reg"))
        transfer.commit()
    derived = store.file_path("derived")
    assert derived.read_bytes() == user.read_bytes()
    assert derived.stat().st_ino != user.stat().st_ino
