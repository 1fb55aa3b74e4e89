"""The egress policy (issue 19, item 4): the server's own fetches (URL downloads, Ollama
pulls and pushes, a registry's redirects and token realm, the hub) never reach an address
inside the network, however it is spelled, and an error never echoes what came back.

The server allows 127.0.0.2 (the tests' hostile registry) and nothing else inside; the
"internal" service listens on 127.0.0.1 and must see no request at all: the policy refuses
before connecting. Also the network 5xx of item 9: an unreachable hub is a 502 that names
it, a name without a host a 400."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from support.hubs import FileHub
from support.registries import AUTH, HOSTILE_HOST, SECRET, Reply, leftovers, listed, pull

MODEL = "application/vnd.ollama.image.model"


def assert_untouched(internal) -> None:
    assert internal.log == [], f"a fetch reached the internal service: {internal.log}"


def download(server, model_id: str, url: str) -> dict:
    """POST /store/v1/models/{id}/download; the last SSE event (or the JSON error)."""
    created = httpx.post(f"{server.url}/store/v1/models", headers=AUTH,
                         json={"id": model_id, "version": "1.0.0", "kind": "llm"})
    assert created.status_code in (200, 201), created.text
    with httpx.stream("POST", f"{server.url}/store/v1/models/{model_id}/download", headers=AUTH,
                      json={"url": url}, timeout=60) as resp:
        if resp.status_code != 200:
            return json.loads(resp.read())
        last = None
        for line in resp.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[len("data: "):])
        return last


# ---- the policy itself (pure) ----------------------------------------------------------------------

@pytest.mark.parametrize("address, kind", [
    ("8.8.8.8", None), ("2606:4700::1111", None), ("127.0.0.2", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("100.64.0.1", "non-public"),
    ("169.254.169.254", "link-local"), ("224.0.0.251", "multicast"), ("0.0.0.0", "unspecified"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fd00::1", "private"),
    ("ff02::1", "multicast"), ("::ffff:10.0.0.1", "private"), ("64:ff9b::a9fe:a9fe", "link-local"),
    ("::127.0.0.1", "loopback"), ("2002:c0a8:101::1", "private"),
])
def test_what_counts_as_inside(address, kind):
    import ipaddress

    from modelyard.server.registry import egress

    assert egress.inside_kind(ipaddress.ip_address(address)) == kind


def test_an_allow_list_names_hosts_and_ranges():
    import ipaddress

    from modelyard.server.registry import egress

    policy = egress.Policy.parse(["Registry.Internal, 10.0.0.0/8", "[::1] 127.0.0.2"])
    assert policy.allows_host("registry.internal.") and not policy.allows_host("other.internal")
    for address in ("10.9.9.9", "::1", "127.0.0.2", "::ffff:10.0.0.1", "8.8.8.8"):
        assert policy.refusal(ipaddress.ip_address(address)) is None, address
    for address in ("127.0.0.1", "192.168.0.1", "fd00::1"):
        assert policy.refusal(ipaddress.ip_address(address)) is not None, address
    for bad in ("not a host!", "2130706433", "10.0.0.0/33"):
        with pytest.raises(ValueError):
            egress.Policy.parse([bad])


def test_serve_refuses_a_bad_allow_list(tmp_path):
    done = subprocess.run([sys.executable, "-m", "modelyard.server.cli", "serve", "--store", str(tmp_path),
                           "--allow-fetch", "10.0.0.0/33"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONSAFEPATH": "1"})
    assert done.returncode == 2 and "--allow-fetch" in done.stderr, done.stderr


# ---- the server's fetches --------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "127.1", "localhost",
                                  "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "0.0.0.0"])
def test_a_download_from_inside_is_refused_in_every_spelling(egress_server, internal, host):
    port = internal.url.rsplit(":", 1)[1]
    model_id = "egress-" + "".join(c for c in host if c.isalnum())
    event = download(egress_server, model_id, f"http://{host}:{port}/files/secret")
    assert event["error"]["code"] == 403, event
    assert "refused" in event["error"]["message"] and "--allow-fetch" in event["error"]["message"]
    assert_untouched(internal)


def test_a_pull_from_an_inside_registry_is_refused(egress_server, internal):
    r = pull(egress_server, f"{internal.url.split('//')[1]}/library/secret:1")
    assert r.status_code == 403 and "refused" in r.json()["error"], r.text
    assert_untouched(internal)


@pytest.mark.parametrize("where", ["manifest", "blob"])
def test_a_registry_redirect_inside_is_refused(egress_server, hostile, internal, gguf_files, where):
    repo = f"egress/redirect-{where}"
    hostile.model(repo, "1", [(MODEL, gguf_files["model"])])
    path = f"/v2/{repo}/manifests/1" if where == "manifest" else hostile.blob_path(repo, gguf_files["model"])
    hostile.set("GET", path, status=302, headers={"Location": f"{internal.url}/files/secret"})
    r = pull(egress_server, f"{hostile.host}/{repo}:1")
    assert r.status_code == 403 and "refused" in r.json()["error"], r.text
    assert SECRET.decode() not in r.text
    assert_untouched(internal)
    assert f"{hostile.host}/{repo}:1" not in listed(egress_server)
    assert leftovers(egress_server, f"{hostile.host}/{repo}:1") == []


def test_a_token_realm_inside_is_refused(egress_server, hostile, internal):
    hostile.set("GET", "/v2/egress/realm/manifests/1", status=401, headers={
        "WWW-Authenticate": f'Bearer realm="{internal.url}/files/secret",service="x"'})
    r = pull(egress_server, f"{hostile.host}/egress/realm:1")
    assert r.status_code == 403 and "refused" in r.json()["error"], r.text
    assert_untouched(internal)


def test_an_error_never_quotes_what_the_registry_sent(egress_server, hostile):
    hostile.set("GET", "/v2/egress/loud/manifests/1", status=500, body=SECRET * 4,
                headers={"Content-Type": "text/html"})
    r = pull(egress_server, f"{hostile.host}/egress/loud:1")
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert SECRET.decode() not in error
    assert "500" in error and "text/html" in error and str(len(SECRET) * 4) in error


def test_https_goes_to_the_checked_address_under_its_name(tmp_path):
    """The transport connects to the address it checked (no second lookup for DNS rebinding
    to answer differently), while the request keeps its Host and TLS checks the certificate
    for the URL's name. In-process: a TLS server on 127.0.0.1 with a certificate for localhost."""
    import shutil
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from modelyard.server.registry import egress

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{self.headers['Host']} {self.connection.getsockname()[0]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        allowed = egress.Transport(egress.Policy.parse(["127.0.0.1"]), verify=trusted)
        with httpx.Client(transport=allowed) as client:
            r = client.get(f"https://localhost:{port}/")
        assert r.status_code == 200 and r.text == f"localhost:{port} 127.0.0.1"
        with httpx.Client(transport=egress.Transport(egress.Policy(), verify=trusted)) as client:
            with pytest.raises(egress.EgressRefused):
                client.get(f"https://localhost:{port}/")
    finally:
        server.shutdown()
        server.server_close()


# ---- push: the upload must stay on the registry -------------------------------------------------

@pytest.fixture(scope="module")
def pushable(egress_server, hostile, gguf_files) -> str:
    """A model in the store to push: pulled from the hostile registry, honest this once."""
    name = f"{hostile.host}/egress/pushable:1"
    hostile.model("egress/pushable", "1", [(MODEL, gguf_files["model"])])
    r = pull(egress_server, name)
    assert r.status_code == 200, r.text
    return name


def push(server, name: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/push", headers=AUTH, timeout=60,
                      json={"model": name, "insecure": True, "stream": False})


@pytest.mark.parametrize("elsewhere", ["internal", "other port"])
def test_an_upload_location_off_the_registry_is_refused(egress_server, hostile, internal, pushable, elsewhere):
    repo = f"egress/push-{elsewhere.replace(' ', '-')}"
    target = f"{hostile.host}/{repo}:1"
    assert httpx.post(f"{egress_server.url}/api/copy", headers=AUTH,
                      json={"source": pushable, "destination": target}).status_code == 200
    location = (f"{internal.url}/files/upload" if elsewhere == "internal"
                else f"http://{HOSTILE_HOST}:{int(hostile.host.rsplit(':', 1)[1]) + 1}/v2/{repo}/blobs/uploads/x")
    hostile.set("POST", f"/v2/{repo}/blobs/uploads/", status=202, headers={"Location": location})
    r = push(egress_server, target)
    assert r.status_code == 502 and "must stay on the registry" in r.json()["error"], r.text
    assert_untouched(internal)
    assert not [entry for entry in hostile.log if entry[0] == "PUT" and repo in entry[1]]


def lenient(hostile, repo: str) -> None:
    """The hostile registry takes any upload to `repo` and its manifest, checking nothing."""
    session = f"/v2/{repo}/blobs/uploads/session"
    hostile.set("POST", f"/v2/{repo}/blobs/uploads/", status=202, headers={"Location": session})
    hostile.set("PUT", session, status=201)
    hostile.set("PUT", f"/v2/{repo}/manifests/1", status=201)


def test_a_push_never_completes_a_layer_whose_file_changed(egress_server, hostile, gguf_files):
    """Integrity of a push: a registry that checks nothing still never gets a changed file
    under its recorded digest (the last chunk waits for the hash)."""
    from modelyard.server.shared import names

    pulled = f"{hostile.host}/egress/changed:1"
    hostile.model("egress/changed", "1", [(MODEL, gguf_files["model"])])
    assert pull(egress_server, pulled).status_code == 200
    for repo in ("egress/sound-push", "egress/changed-push"):
        lenient(hostile, repo)
        assert httpx.post(f"{egress_server.url}/api/copy", headers=AUTH,
                          json={"source": pulled, "destination": f"{hostile.host}/{repo}:1"}).status_code == 200
    r = push(egress_server, f"{hostile.host}/egress/sound-push:1")
    assert r.status_code == 200, r.text

    path = egress_server.store / "models" / names.to_id(pulled) / "model.gguf"
    with open(path, "r+b") as f:  # its owner rewrites it in place (a file registered by path)
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    r = push(egress_server, f"{hostile.host}/egress/changed-push:1")
    assert r.status_code == 409 and "changed since it was recorded" in r.json()["error"], r.text
    assert ("PUT", "/v2/egress/changed-push/manifests/1") not in hostile.log


# ---- the hub and `modelyard fetch` ----------------------------------------------------------------

def test_the_hub_behind_hf_endpoint_obeys_the_policy(internal, tmp_path):
    """huggingface_hub's own client goes through the policy: `modelyard fetch` with the default
    policy, HF_ENDPOINT inside, refuses and the hub sees nothing."""
    env = {**os.environ, "HF_ENDPOINT": internal.url, "HF_HOME": str(tmp_path / "hf"),
           "PYTHONSAFEPATH": "1"}
    env.pop("MODELYARD_ALLOW_FETCH", None)
    done = subprocess.run([sys.executable, "-m", "modelyard.server.cli", "fetch",
                           "hf://org/inside/inside-Q8_0.gguf", "--store", str(tmp_path / "store"),
                           "--id", "inside", "--kind", "llm"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["error"]["code"] == 403 and "refused" in last["error"]["message"], last
    assert_untouched(internal)


def test_an_allowed_hub_is_reached(tmp_path, gguf_files):
    """The other side of the test above: --allow-fetch lets the same fetch through."""
    with FileHub() as hub:
        hub.add_hf("org/allowed", "allowed-Q8_0.gguf", gguf_files["model"])
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "PYTHONSAFEPATH": "1"}
        env.pop("MODELYARD_ALLOW_FETCH", None)
        done = subprocess.run([sys.executable, "-m", "modelyard.server.cli", "fetch",
                               "hf://org/allowed/allowed-Q8_0.gguf", "--store", str(tmp_path / "store"),
                               "--id", "allowed", "--kind", "llm", "--allow-fetch", "127.0.0.0/8"],
                              env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["done"] is True


# ---- item 9: the network's 5xx ------------------------------------------------------------------

def test_a_hub_that_gives_no_answer_is_a_502_that_names_it(egress_server, hostile):
    """The hub (HF_ENDPOINT, the hostile registry here) sends its tree listings round a
    redirect loop: no answer, as when it is unreachable (a refused connection gives the same
    502 after huggingface_hub's retries, about 23 s: too slow for the suite). It was a 500
    naming the client's exception."""
    for repo in ("org/absent", "Qwen/Qwen2.5-0.5B-Instruct-GGUF"):
        tree = f"/api/models/{repo}/tree/main"
        hostile.set("GET", tree, status=302, headers={"Location": tree})
    r = httpx.post(f"{egress_server.url}/api/models/pull", headers=AUTH, timeout=60,
                   json={"name": "hf:org/absent", "stream": False})
    assert r.status_code == 502 and hostile.host in r.json()["error"]["message"], r.text
    r = httpx.post(f"{egress_server.url}/api/defaults/qwen2.5-0.5b/use", headers=AUTH, timeout=60)
    assert r.status_code == 502 and hostile.host in r.json()["error"]["message"], r.text
    r = httpx.post(f"{egress_server.url}/api/pull", headers=AUTH, timeout=60,
                   json={"model": "hf.co/org/absent", "stream": False})
    assert r.status_code == 502 and hostile.host in r.json()["error"], r.text


def test_a_name_without_a_host_is_a_400(egress_server):
    r = pull(egress_server, "__main__")
    assert r.status_code == 400, r.text
