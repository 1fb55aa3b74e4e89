"""The server image, run as the operator runs it: the download Job, then the inference pod.

The podman options come from the Job and the Deployment that the operator's own builders
make for a Model (imagebuild.run_args plays the kubelet): the same command, arguments,
environment, user, read-only root filesystem, dropped capabilities, volumes and memory
limit. The Model's source is a Hugging Face repository on the local hub stand-in.
"""
from __future__ import annotations

import hashlib
import json
import platform
import secrets
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

import imagebuild
from imagebuild import podman
from support.hubs import FileHub
from support.servers import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
import modelgen  # noqa: E402

from modelyard.operator.builders.download import build_download_job, source_hash  # noqa: E402
from modelyard.operator.builders.serving import api_key_ref, build_deployment  # noqa: E402
from modelyard.operator.settings import SERVER_PORT, OperatorSettings  # noqa: E402

pytestmark = pytest.mark.images

NAME = "tiny-chat"
REPO, FILE = "modelyard-tests/tiny-chat-GGUF", "tiny-chat-q8_0.gguf"
CTX = 512
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name three colours."}]
# qwen2's end-of-text and end-of-turn tokens: banned, so every answer has max_tokens tokens.
NO_EOS = {"151643": -100, "151645": -100}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    # Q8_0: the quantisation whose AMX kernels crash; the image's llama.cpp leaves them out.
    folder = tmp_path_factory.mktemp("image-model")
    return modelgen.make_llama_gguf(folder / FILE, vocab="qwen2", qtype="Q8_0")


@pytest.fixture(scope="module")
def hub(model_file):
    with FileHub() as h:
        h.add_hf(REPO, FILE, model_file.read_bytes())
        yield h


def model_resource(sha256: str) -> dict:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": NAME, "namespace": "default", "uid": str(uuid.uuid4())},
        "spec": {
            "kind": "llm",
            "version": "1.0.0",
            "source": {"huggingface": {"repo": REPO, "file": FILE}},
            "sha256": sha256,
            "gguf": {"initContextSize": CTX, "initGpuLayerSize": 0},
        },
    }


def container_name(role: str) -> str:
    return f"modelyard-test-{role}-{uuid.uuid4().hex[:8]}"


def test_fetch_then_serve_read_only_as_the_operator_runs_them(server_image, llama_wheels, hub,
                                                               model_file, tmp_path):
    data = model_file.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    model = model_resource(sha256)
    settings = OperatorSettings(server_image=server_image)

    job = build_download_job(model, settings)
    job_pod = job["spec"]["template"]["spec"]
    fetch = job_pod["containers"][0]
    assert fetch["image"] == server_image
    claim = job_pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    uid = job_pod["securityContext"]["runAsUser"]

    with imagebuild.volume(f"modelyard-test-{uuid.uuid4().hex[:8]}", uid, uid) as cache:
        # ---- the download Job's container. Host networking: the hub stand-in listens on
        # the host's loopback.
        done = podman("run", "--rm", "--name", container_name("fetch"), "--network", "host",
                      *imagebuild.run_args(job_pod, fetch, claims={claim: cache},
                                           extra_env={"HF_ENDPOINT": hub.url,
                                                      # the hub stand-in is on loopback (docs/security.md)
                                                      "MODELYARD_ALLOW_FETCH": "127.0.0.0/8"}),
                      fetch["image"], *imagebuild.run_command(fetch), check=False, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, done.stdout + done.stderr
        assert lines[-1]["done"] is True
        assert lines[-1]["model"]["readyToUse"] is True
        assert lines[-1]["model"]["sha256"] == sha256
        assert any(e.get("totalSize") == len(data) for e in lines[:-1]), lines
        assert hub.gets(f"/{REPO}/resolve/main/{FILE}"), "the fetch did not download from the hub"

        # The volume holds the model, complete, owned by the Job's user.
        mountpoint = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", cache).stdout.strip())
        stored = mountpoint / "models" / NAME / "model.gguf"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha256
        assert stored.stat().st_uid == uid
        assert not list(mountpoint.rglob("*.partial"))

        # ---- the inference pod's container, on the volume mounted read-only.
        deployment = build_deployment(model, settings, source_hash=source_hash(model["spec"]))
        pod = deployment["spec"]["template"]["spec"]
        serve = pod["containers"][0]
        assert any(m["mountPath"] == "/cache" and m["readOnly"] for m in serve["volumeMounts"])
        key_ref = api_key_ref(model)
        key = secrets.token_urlsafe(24)
        port = free_port()
        name = container_name("serve")
        podman("run", "--detach", "--name", name,
               # A network namespace of its own, as a pod has; its port published on loopback.
               "--network", "slirp4netns", "--publish", f"127.0.0.1:{port}:{SERVER_PORT}",
               *imagebuild.run_args(pod, serve, claims={claim: cache},
                                    secrets={(key_ref["name"], key_ref["key"]): key}),
               serve["image"], *imagebuild.run_command(serve))
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, name, timeout=180)
            check_serving(url, key, name, model_file, same_build=llama_wheels is not None)
        finally:
            podman("rm", "--force", "--time", "5", name, check=False)


def wait_ready(url: str, name: str, timeout: float) -> None:
    """Poll /readyz (the Deployment's readiness probe) until the model is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        if state not in ("running", "created", "configured"):
            pytest.fail(f"the server container is {state}:\n{logs(name)}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"/readyz not 200 after {timeout} s:\n{logs(name)}")


def logs(name: str) -> str:
    done = podman("logs", "--tail", "80", name, check=False)
    return (done.stdout + done.stderr)[-6000:]


def check_serving(url: str, key: str, name: str, model_file: Path, same_build: bool) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == [NAME]
    answer = client.chat.completions.create(model=NAME, messages=MESSAGES, temperature=0,
                                            max_tokens=8, logit_bias=NO_EOS)
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 8
    assert choice.message.content
    if same_build:
        # The image runs the host's llama.cpp build: the same tokens as in-process here.
        import llama_cpp

        reference = llama_cpp.Llama(str(model_file), n_ctx=CTX, n_threads=2, verbose=False)
        expected = reference.create_chat_completion(
            messages=MESSAGES, temperature=0, max_tokens=8,
            logit_bias={int(token): bias for token, bias in NO_EOS.items()})
        assert choice.message.content == expected["choices"][0]["message"]["content"]

    # Off loopback the key is required, and the store is the Model's: no mutations.
    unauthenticated = httpx.post(url + "/v1/chat/completions", json={"model": NAME, "messages": MESSAGES},
                                 timeout=30)
    assert unauthenticated.status_code == 401, unauthenticated.text
    refused = httpx.delete(f"{url}/store/v1/models/{NAME}", headers={"Authorization": f"Bearer {key}"},
                           timeout=10)
    assert refused.status_code == 409, refused.text
    assert "managed by its Model" in refused.json()["error"]["message"]

    # Inside: not root, and neither the root filesystem nor the cache can be written.
    inside = podman("exec", name, "sh", "-c",
                    "id -u; touch /opt/x 2>&1; touch /cache/x 2>&1; touch /tmp/x && echo tmp-ok",
                    check=False).stdout
    first, *rest = inside.splitlines()
    assert first == "10001", inside
    assert sum("Read-only file system" in line for line in rest) == 2, inside
    assert rest[-1] == "tmp-ok", inside


def test_server_image_default_command_prints_serve_help(server_image):
    done = podman("run", "--rm", "--read-only", server_image, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: modelyard serve" in done.stdout
    assert podman("image", "inspect", "--format", "{{.Config.User}}", server_image).stdout.strip() == "10001:10001"


def test_server_image_llama_cpp_has_no_amx_kernels(server_image, llama_wheels):
    """ggml's AMX kernels crash on Q8_0 models: neither build may carry them."""
    script = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    info = podman("run", "--rm", "--entrypoint", "python3", server_image, "-c", script, timeout=120).stdout
    features = {name.strip(): value.strip() for name, _, value in
                (part.partition("=") for part in info.split("|")) if value.strip()}
    if platform.machine() == "x86_64":
        assert features.get("AVX2") == "1", info
    assert not any(name.startswith("AMX") and value == "1" for name, value in features.items()), info
    if llama_wheels is None:
        # Compiled by the Dockerfile for any x86-64-v3 CPU, not for the build machine.
        assert features.get("AVX512", "0") == "0", info
