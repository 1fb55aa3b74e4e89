"""POST /models/{id}/download against a real gunicorn, a local file server and a hub stand-in."""
from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from support.hubs import COMMIT, FileHub
from support.modelfiles import make_gguf

PREFIXES = ["/store/v1", "/mimik-ai/store/v1"]
AUTH = {"Authorization": "Bearer 1234"}
MB = 1024 * 1024


@pytest.fixture
def hub():
    with FileHub() as h:
        yield h


@pytest.fixture
def dl_server(server_factory, hub, tmp_path):
    return server_factory(api_key="1234", env={"HF_ENDPOINT": hub.url,
                                               "HF_HOME": str(tmp_path / "hf-home")})


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory):
    """A valid 6 MiB GGUF, and a second, different one for projectors."""
    folder = tmp_path_factory.mktemp("gguf")
    return (make_gguf(folder / "m.gguf", 6 * MB).read_bytes(),
            make_gguf(folder / "p.gguf", 1 * MB, seed=1).read_bytes())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(server, model_id, kind="llm"):
    r = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                   json={"id": model_id, "version": "1.0.0", "kind": kind})
    assert r.status_code == 201, r.text


def download(server, model_id, body, prefix="/store/v1"):
    return httpx.stream("POST", f"{server.url}{prefix}/models/{model_id}/download",
                        json=body, headers=AUTH, timeout=httpx.Timeout(60, connect=5))


def events(resp):
    """The data events of an SSE response, one by one, as they arrive."""
    for line in resp.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: "):])


def run_download(server, model_id, body, prefix="/store/v1") -> list[dict]:
    with download(server, model_id, body, prefix) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        return list(events(resp))


def model(server, model_id):
    return httpx.get(f"{server.url}/store/v1/models/{model_id}")


def stored_file(server, model_id) -> bytes:
    r = httpx.get(f"{server.url}/store/v1/models/{model_id}?alt=media")
    assert r.status_code == 200
    return r.content


def partials(server, model_id) -> list[str]:
    return sorted(p.name for p in (server.store / "models" / model_id).glob("*.partial"))


def wait_until(condition, timeout=30.0, what="condition"):
    """Poll a condition that another process makes true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def check_progress(progress: list[dict], total: int) -> None:
    assert progress, "no progress events"
    sizes = [e["size"] for e in progress]
    assert sizes == sorted(sizes)
    assert all(e["totalSize"] == total for e in progress)
    assert sizes[-1] == total


@pytest.mark.parametrize("prefix", PREFIXES)
def test_download_streams_progress_then_done(dl_server, hub, gguf_bytes, prefix):
    data = gguf_bytes[0]
    url = hub.add("m.gguf", data, rate=8 * MB)  # about 0.75 s: several progress events
    create(dl_server, "m1")
    got = run_download(dl_server, "m1", {"url": url}, prefix)
    done = got[-1]
    assert done["done"] is True
    assert done["model"]["readyToUse"] is True
    assert done["model"]["totalSize"] == len(data)
    assert done["model"]["sha256"] == sha(data)
    check_progress(got[:-1], len(data))
    assert len(got) >= 3
    assert model(dl_server, "m1").json() == done["model"]
    assert sha(stored_file(dl_server, "m1")) == sha(data)
    assert partials(dl_server, "m1") == []


def test_vlm_reports_projector_progress(dl_server, hub, gguf_bytes):
    main, proj = gguf_bytes
    create(dl_server, "v1", kind="vlm")
    got = run_download(dl_server, "v1", {"url": hub.add("v.gguf", main),
                                         "mmprojUrl": hub.add("p.gguf", proj)})
    main_events = [e for e in got if "size" in e]
    proj_events = [e["mmproj"] for e in got if "mmproj" in e]
    check_progress(main_events, len(main))
    check_progress(proj_events, len(proj))
    # The main file first, then the projector, as in the mModelStore API's example.
    assert got.index(main_events[-1]) < got.index({"mmproj": proj_events[0]})
    assert got[-1]["done"] is True and got[-1]["model"]["readyToUse"] is True
    assert got[-1]["model"]["totalSize"] == len(main) + len(proj)

    # With the projector in place, the main file alone may be downloaded again.
    got = run_download(dl_server, "v1", {"url": hub.url + "/files/v.gguf"})
    assert got[-1]["model"]["readyToUse"] is True


def test_refusals_are_json_errors_before_the_stream(dl_server, hub, gguf_bytes):
    url = hub.add("m.gguf", gguf_bytes[0])
    base = f"{dl_server.url}/store/v1/models"
    create(dl_server, "llm1")
    create(dl_server, "vlm1", kind="vlm")

    def post(model_id, body, headers=AUTH):
        r = httpx.post(f"{base}/{model_id}/download", json=body, headers=headers)
        assert r.headers["content-type"].startswith("application/json")
        return r.status_code, r.json()["error"]["message"]

    code, message = post("llm1", {})
    assert code == 400 and "'url'" in message
    code, message = post("llm1", {"url": 3})
    assert code == 400 and "'url'" in message
    code, message = post("llm1", {"url": "ftp://example.com/x.gguf"})
    assert code == 400 and "'url'" in message
    code, message = post("llm1", {"url": url, "mmprojUrl": url})
    assert code == 400 and "vlm" in message
    code, message = post("vlm1", {"url": url})
    assert code == 400 and "mmprojUrl" in message
    code, message = post("nope", {"url": url})
    assert code == 404 and "nope" in message
    code, _ = post(".hidden", {"url": url})
    assert code == 400
    code, _ = post("llm1", {"url": url}, headers={})
    assert code == 401
    assert model(dl_server, "llm1").json()["readyToUse"] is False


def test_second_download_of_a_busy_model_is_409(dl_server, hub, gguf_bytes):
    url = hub.add("slow.gguf", gguf_bytes[0], rate=1 * MB)
    create(dl_server, "busy")
    with download(dl_server, "busy", {"url": url}) as first:
        next(events(first))  # the download holds the model now
        r = httpx.post(f"{dl_server.url}/store/v1/models/busy/download", json={"url": url},
                       headers=AUTH)
        assert r.status_code == 409
        assert "in progress" in r.json()["error"]["message"]


def test_client_disconnect_cancels_and_removes_partials(dl_server, hub, gguf_bytes):
    url = hub.add("slow.gguf", gguf_bytes[0], rate=1 * MB)
    create(dl_server, "gone")
    with download(dl_server, "gone", {"url": url}) as resp:
        for event in events(resp):
            if event.get("size", 0) > 0:
                assert partials(dl_server, "gone")  # the bytes are landing in a .partial
                break
    # The server sees the disconnect at its next write, cancels, and cleans up.
    wait_until(lambda: not partials(dl_server, "gone"), what="partials removed")
    assert model(dl_server, "gone").json()["readyToUse"] is False
    # The lock is free again: a new download starts (and is cut short the same way).
    with download(dl_server, "gone", {"url": url}) as resp:
        assert resp.status_code == 200


def test_silences_carry_ping_comments(dl_server, hub, gguf_bytes):
    url = hub.add("stall.gguf", gguf_bytes[1], stall=7)  # longer than the 5 s ping interval
    create(dl_server, "quiet")
    with download(dl_server, "quiet", {"url": url}) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert ": ping" in lines
    first_bytes = next(i for i, line in enumerate(lines) if '"size":' in line and
                       json.loads(line[len("data: "):])["size"] > 0)
    assert lines.index(": ping") < first_bytes
    assert json.loads(lines[-1][len("data: "):])["done"] is True


def test_resumes_after_a_dropped_connection(dl_server, hub, gguf_bytes):
    data = gguf_bytes[0]
    url = hub.add("flaky.gguf", data, drop_after=2 * MB + 123)
    create(dl_server, "flaky")
    got = run_download(dl_server, "flaky", {"url": url})
    assert got[-1]["done"] is True, got[-1]
    assert sha(stored_file(dl_server, "flaky")) == sha(data)
    gets = hub.gets("/files/flaky.gguf")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={2 * MB + 123}-"
    assert gets[1].headers["if-range"] == f'"{sha(data)}"'


def test_restarts_when_the_server_ignores_range(dl_server, hub, gguf_bytes):
    data = gguf_bytes[0]
    url = hub.add("norange.gguf", data, drop_after=1 * MB, ignore_range=True)
    create(dl_server, "norange")
    got = run_download(dl_server, "norange", {"url": url})
    assert got[-1]["done"] is True, got[-1]
    assert sha(stored_file(dl_server, "norange")) == sha(data)


def test_upstream_404_is_an_error_event(dl_server, hub):
    create(dl_server, "missing")
    url = hub.url + "/files/absent.gguf"
    got = run_download(dl_server, "missing", {"url": url})
    assert len(got) == 1
    error = got[0]["error"]
    assert error["code"] == 404
    assert url in error["message"] and "404" in error["message"]
    assert model(dl_server, "missing").json()["readyToUse"] is False


def test_content_that_is_not_gguf_is_refused(dl_server, hub):
    url = hub.add("page.html", b"<html>not a model</html>" * 1000)
    create(dl_server, "html")
    got = run_download(dl_server, "html", {"url": url})
    assert got[-1]["error"]["code"] == 400
    assert "GGUF" in got[-1]["error"]["message"]
    assert model(dl_server, "html").json()["readyToUse"] is False
    assert partials(dl_server, "html") == []


@pytest.mark.parametrize("form", ["resolve-url", "hf-uri"])
def test_hugging_face_sources_go_through_huggingface_hub(dl_server, hub, gguf_bytes, form):
    data = gguf_bytes[0]
    hub.add_hf("org/repo-GGUF", "sub/model-Q8_0.gguf", data)
    url = {"resolve-url": "https://huggingface.co/org/repo-GGUF/resolve/main/sub/model-Q8_0.gguf"
                          "?download=true",
           "hf-uri": "hf://org/repo-GGUF/sub/model-Q8_0.gguf"}[form]
    create(dl_server, "hf1")
    got = run_download(dl_server, "hf1", {"url": url})
    assert got[-1]["done"] is True, got[-1]
    check_progress(got[:-1], len(data))
    assert sha(stored_file(dl_server, "hf1")) == sha(data)
    # huggingface_hub's own protocol: a HEAD for the metadata, then the GET.
    seen = [(r.method, r.path) for r in hub.log]
    path = "/org/repo-GGUF/resolve/main/sub/model-Q8_0.gguf"
    assert ("HEAD", path) in seen and ("GET", path) in seen
    leftovers = [p.name for p in (dl_server.store / "models" / "hf1").iterdir()]
    assert sorted(leftovers) == [".lock", "model.gguf", "model.json"]


def test_gated_hugging_face_file_needs_hf_token(server_factory, hub, gguf_bytes, tmp_path):
    data = gguf_bytes[1]
    hub.add_hf("org/gated", "g.gguf", data, token="hf_secret")
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home")}

    without = server_factory(api_key="1234", env=env)
    create(without, "g")
    got = run_download(without, "g", {"url": "hf://org/gated/g.gguf"})
    assert got[-1]["error"]["code"] == 401
    assert "org/gated" in got[-1]["error"]["message"]

    with_token = server_factory(api_key="1234", env={**env, "HF_TOKEN": "hf_secret"})
    create(with_token, "g")
    got = run_download(with_token, "g", {"url": "hf://org/gated/g.gguf"})
    assert got[-1]["done"] is True, got[-1]
    second = [r for r in hub.log if "/resolve/" in r.path][-2:]
    assert [r.method for r in second] == ["HEAD", "GET"]
    assert all(r.headers.get("authorization") == "Bearer hf_secret" for r in second)


def test_delete_cancels_a_running_download(dl_server, hub, gguf_bytes):
    url = hub.add("slow.gguf", gguf_bytes[0], rate=1 * MB)
    create(dl_server, "doomed")
    with download(dl_server, "doomed", {"url": url}) as resp:
        stream = events(resp)
        assert next(stream)["totalSize"] == len(gguf_bytes[0])
        r = httpx.delete(f"{dl_server.url}/store/v1/models/doomed", headers=AUTH, timeout=60)
        assert r.status_code == 204
        rest = list(stream)
    assert rest[-1]["error"]["code"] == 409
    assert "cancelled" in rest[-1]["error"]["message"]
    assert model(dl_server, "doomed").status_code == 404
    assert not (dl_server.store / "models" / "doomed").exists()


def test_server_killed_mid_download_restarts_clean(dl_server, hub, gguf_bytes):
    url = hub.add("slow.gguf", gguf_bytes[0], rate=1 * MB)
    create(dl_server, "crash")
    with download(dl_server, "crash", {"url": url}) as resp:
        for event in events(resp):
            if event.get("size", 0) > 0:
                break
        assert partials(dl_server, "crash")
        dl_server.kill()
    dl_server.start()
    assert model(dl_server, "crash").json()["readyToUse"] is False
    assert partials(dl_server, "crash") == []
    # And the model can be downloaded afterwards.
    hub.files["files/slow.gguf"].rate = None
    got = run_download(dl_server, "crash", {"url": url})
    assert got[-1]["model"]["readyToUse"] is True
