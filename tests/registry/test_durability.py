"""Crashes, concurrency and read-only stores: nothing is lost or marked ready wrongly."""
from __future__ import annotations

import hashlib
import contextlib
import json
import os
import shutil
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from support.modelfiles import make_gguf

AUTH = {"Authorization": "Bearer 1234"}
LLM = {"id": "m1", "version": "1.0.0", "kind": "llm"}


BOUNDARY = "modelyardtestboundary"


def multipart_pieces(data: bytes) -> tuple[bytes, bytes]:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"m.gguf\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode()


def slow_multipart(data: bytes, started: threading.Event, chunk=64 * 1024, delay=0.02):
    """A multipart body that trickles in, so a test can crash the server mid-upload."""
    head, tail = multipart_pieces(data)
    yield head
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]
        started.set()
        time.sleep(delay)
    yield tail


def start_slow_upload(server, model_id, data):
    started = threading.Event()
    result = {}

    def run():
        try:
            result["response"] = httpx.post(
                f"{server.url}/store/v1/models/{model_id}/upload",
                content=slow_multipart(data, started),
                headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                         "Content-Length": str(sum(map(len, multipart_pieces(data))) + len(data))},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    return thread, result


@contextlib.contextmanager
def read_only_view(source, mount):
    """`mount` shows `source` read-only: a bind mount as root (as a cluster mounts the
    cache), file modes otherwise."""
    mount.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(source), str(mount)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    else:
        mount.rmdir()
        shutil.copytree(source, mount)
        for path in sorted(mount.rglob("*"), reverse=True) + [mount]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        yield


def partials(server):
    return sorted(p.name for p in server.store.rglob("*.partial"))


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("previous", ["none", "ready"])
def test_kill_9_during_upload_then_restart(server, tmp_path, previous):
    httpx.post(f"{server.url}/store/v1/models", json=LLM, headers=AUTH)
    old = make_gguf(tmp_path / "old.gguf", 50_000, seed=1)
    if previous == "ready":
        with open(old, "rb") as f:
            r = httpx.post(f"{server.url}/store/v1/models/m1/upload", files={"file": f}, headers=AUTH)
        assert r.json()["readyToUse"] is True
    data = make_gguf(tmp_path / "new.gguf", 4_000_000, seed=2).read_bytes()
    thread, _ = start_slow_upload(server, "m1", data)
    assert wait_for(lambda: partials(server)), "the upload never reached the disk"

    server.kill()
    thread.join(10)
    assert partials(server)  # the crash left it; the restart must clean it up
    server.start()

    assert partials(server) == []
    model = httpx.get(f"{server.url}/store/v1/models/m1").json()
    if previous == "ready":
        # The interrupted upload cost nothing: the old complete file is still served.
        assert model["readyToUse"] is True
        body = httpx.get(f"{server.url}/store/v1/models/m1?alt=media").content
        assert body == old.read_bytes()
    else:
        assert model["readyToUse"] is False
        assert not (server.store / "models" / "m1" / "model.gguf").exists()


def test_client_disconnect_during_upload_leaves_no_partial(server, tmp_path):
    httpx.post(f"{server.url}/store/v1/models", json=LLM, headers=AUTH)
    data = make_gguf(tmp_path / "new.gguf", 2_000_000).read_bytes()
    boundary = b"bnd"
    head = (b"--bnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.gguf\"\r\n\r\n")
    body = head + data + b"\r\n--bnd--\r\n"
    import socket

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /store/v1/models/m1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer 1234\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[: len(body) // 2]
        )
        assert wait_for(lambda: partials(server), timeout=30)  # a loaded machine is slow to start it
    # Truncated body: the server must notice, answer nothing useful, and clean up.
    assert wait_for(lambda: not partials(server), timeout=20), partials(server)
    assert httpx.get(f"{server.url}/store/v1/models/m1").json()["readyToUse"] is False


def test_chunked_upload_is_stored(server, tmp_path):
    # httpx sends an iterator chunked (no Content-Length); tests/registry/test_chunked_uploads.py
    # has the limit and the framing errors
    httpx.post(f"{server.url}/store/v1/models", json=LLM, headers=AUTH)
    data = make_gguf(tmp_path / "a.gguf").read_bytes()
    head, tail = multipart_pieces(data)
    r = httpx.post(f"{server.url}/store/v1/models/m1/upload", content=iter([head, data, tail]),
                   headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert r.status_code == 200, r.text
    assert r.json()["readyToUse"] is True and r.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_concurrent_uploads_on_one_id(server, tmp_path):
    httpx.post(f"{server.url}/store/v1/models", json=LLM, headers=AUTH)
    files = [make_gguf(tmp_path / f"{i}.gguf", 1_000_000, seed=i) for i in range(4)]

    def send(path):
        with open(path, "rb") as f:
            return httpx.post(f"{server.url}/store/v1/models/m1/upload",
                              files={"file": f}, headers=AUTH, timeout=60)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(send, files))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 409} and 200 in codes
    for r in responses:
        if r.status_code == 409:
            assert "in progress" in r.json()["error"]["message"]
    served = httpx.get(f"{server.url}/store/v1/models/m1?alt=media").content
    winners = [f.read_bytes() for f, r in zip(files, responses) if r.status_code == 200]
    assert served in winners
    model = httpx.get(f"{server.url}/store/v1/models/m1").json()
    assert model["sha256"] == hashlib.sha256(served).hexdigest()
    assert partials(server) == []


def test_concurrent_creates_and_updates_keep_metadata_whole(server):
    def work(i):
        if i % 2:
            return httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                              json={**LLM, "version": f"v{i}"}).status_code
        return httpx.put(f"{server.url}/store/v1/models", headers=AUTH, json={
            "id": "m1", "action": "update", "gguf": {"initContextSize": i}}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(work, range(40)))
    assert set(codes) <= {200, 201, 404}
    assert codes.count(201) == 1
    meta = json.loads((server.store / "models" / "m1" / "model.json").read_text())
    assert meta["id"] == "m1" and meta["version"].startswith("v")
    assert not list((server.store / "models" / "m1").glob("*.tmp"))


def test_read_only_store_serves_and_refuses_mutations(server_factory, tmp_path):
    writable = server_factory(api_key="1234", store_dir=tmp_path / "cache")
    httpx.post(f"{writable.url}/store/v1/models", json=LLM, headers=AUTH)
    with open(make_gguf(tmp_path / "a.gguf"), "rb") as f:
        httpx.post(f"{writable.url}/store/v1/models/m1/upload", files={"file": f}, headers=AUTH)
    writable.stop()

    mount = tmp_path / "ro-cache"
    with read_only_view(tmp_path / "cache", mount):
        ro = server_factory(api_key="1234", store_dir=mount)
        assert httpx.get(f"{ro.url}/store/v1/models/m1").json()["readyToUse"] is True
        assert httpx.get(f"{ro.url}/store/v1/models/m1?alt=media").status_code == 200
        for method, path, body in [("DELETE", "/m1", None), ("POST", "", LLM),
                                   ("PUT", "", {"id": "m1", "action": "update"}),
                                   ("POST", "/m1/download", {"url": "http://127.0.0.1:9/x"})]:
            r = httpx.request(method, f"{ro.url}/store/v1/models{path}", json=body, headers=AUTH)
            assert r.status_code == 409, (method, r.text)
            assert "managed by its Model resource" in r.json()["error"]["message"]
        ro.stop()
    assert (tmp_path / "cache" / "models" / "m1" / "model.gguf").exists()
