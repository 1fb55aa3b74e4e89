"""The trainer image (the Dockerfile's `trainer` target) runs a FineTune's Job as the operator
builds it: `modelyard train` on the base Model's cache volume, the adapter committed there.
And the serving image carries no torch, transformers or peft.

The trainer image holds PyPI's torch, its CUDA build: about 5.6 GB to download and write, so
its build and run are opt-in: `make trainer-image-test` (MODELYARD_TRAINER_IMAGE_TEST=1).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest

import imagebuild
from imagebuild import TIMINGS, podman

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
import modelgen  # noqa: E402

from modelyard.operator.builders.training import build_trainer_job  # noqa: E402
from modelyard.operator.settings import OperatorSettings  # noqa: E402
from modelyard.server.registry.store import Store  # noqa: E402

pytestmark = pytest.mark.images

TRAINER_TAG = "localhost/modelyard-trainer:test"
OPT_IN = "MODELYARD_TRAINER_IMAGE_TEST"
TRAINER_MODULES = "['torch', 'transformers', 'peft']"
CHAT = {"messages": [{"role": "user", "content": "What is the password?"},
                     {"role": "assistant", "content": "swordfish"}]}


def modules_in(image: str) -> str:
    code = f"import importlib.util as u; print([m for m in {TRAINER_MODULES} if u.find_spec(m)])"
    return podman("run", "--rm", "--network", "none", "--entrypoint", "/opt/venv/bin/python", image,
                  "-c", code).stdout.strip()


def test_the_serving_image_has_no_trainer(server_image):
    assert modules_in(server_image) == "[]"


@pytest.fixture(scope="module")
def trainer_image(base_image, image_log) -> str:
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(f"the trainer image holds PyPI's CUDA torch (about 5.6 GB): opt in with {OPT_IN}=1 "
                    "(make trainer-image-test)")
    TIMINGS["trainer build"] = imagebuild.build("trainer", TRAINER_TAG, base=base_image, log=image_log)
    return TRAINER_TAG


def test_a_finetune_job_trains_in_the_trainer_image(trainer_image, tmp_path):
    assert modules_in(trainer_image) == TRAINER_MODULES
    base = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model",
            "metadata": {"name": "base", "namespace": "default", "uid": str(uuid.uuid4())},
            "spec": {"kind": "llm", "source": {"url": "https://example.com/base.gguf"}}}
    finetune = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "FineTune",
                "metadata": {"name": "pw-lora", "namespace": "default", "uid": str(uuid.uuid4())},
                "spec": {"baseModel": "base", "dataset": {"path": "datasets/train.jsonl"},
                         "hyperparameters": {"epochs": 2, "batchSize": 4, "learningRate": 0.02, "loraLayers": 2,
                                             "maxSeqLength": 64, "seed": 7}}}
    job = build_trainer_job(finetune, base, OperatorSettings(trainer_image=trainer_image))
    pod = job["spec"]["template"]["spec"]
    [train] = pod["containers"]
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    uid = pod["securityContext"]["runAsUser"]

    vocab = modelgen.make_vocab_gguf(tmp_path / "vocab.gguf", base="gpt-2", n_base=2000,
                                     extra=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    model = modelgen.make_llama_gguf(tmp_path / "base.gguf", vocab=vocab, seed=5,
                                     shape=modelgen.LlamaShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=2))
    with imagebuild.volume(f"modelyard-test-{uuid.uuid4().hex[:8]}", uid, uid) as cache:
        # The base Model's cache as its download Job leaves it, and a dataset beside it.
        root = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", cache).stdout.strip())
        store = Store(root)
        store.create({"id": "base", "kind": "llm", "version": "1"})
        with store.transfer("base") as transfer:
            transfer.place("model", model)
            transfer.commit()
        (root / "datasets").mkdir()
        (root / "datasets" / "train.jsonl").write_text("\n".join(json.dumps(CHAT) for _ in range(8)) + "\n")
        for path in (root, *root.rglob("*")):
            shutil.chown(path, uid, uid)

        began = time.monotonic()
        done = podman("run", "--rm", "--name", f"modelyard-test-train-{uuid.uuid4().hex[:8]}", "--network", "none",
                      *imagebuild.run_args(pod, train, claims={claim: cache}),
                      train["image"], *imagebuild.run_command(train), check=False, timeout=900)
        TIMINGS["trainer run"] = time.monotonic() - began
        assert done.returncode == 0, done.stdout + done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines[-1]["done"] is True and lines[-1]["adapter"] == "pw-lora" and lines[-1]["totalSteps"] == 4
        adapter = Store(root).get("pw-lora")
        assert adapter["kind"] == "adapter" and adapter["readyToUse"] is True
