"""The cache PVC and the download Job that fills it with `modelyard fetch`."""
from __future__ import annotations

import json
from typing import Any

from .. import names
from ..settings import CACHE_MOUNT, OperatorSettings
from . import common

FETCH_CONTAINER = "fetch"


def source_hash(spec: dict[str, Any]) -> str:
    """What decides whether the cache must be filled again: the base and the adapters.

    The token Secret is left out: a new token does not make a new file.
    """
    identity = _base_identity(spec)
    if spec.get("adapters"):  # only when set: a Model without adapters keeps the hash it had
        identity["adapters"] = adapter_flags(spec)
    return names.stable_hash(identity)


def base_hash(spec: dict[str, Any]) -> str:
    """What the base file alone depends on: when it is the cache's, a change of source_hash is
    a change of spec.adapters only, which an adapters-only Job fetches while the pods serve."""
    return names.stable_hash(_base_identity(spec))


def _base_identity(spec: dict[str, Any]) -> dict[str, Any]:
    source = {k: v for k, v in (spec.get("source") or {}).items() if k != "tokenSecretRef"}
    hf = source.get("huggingface")
    if hf is not None:
        # An explicit `revision: main` is the same download as the default.
        source["huggingface"] = {"revision": "main", **hf}
    return {"source": source, "sha256": spec.get("sha256"), "kind": spec.get("kind")}


def adapter_flags(spec: dict[str, Any]) -> list[str]:
    """`modelyard fetch --adapter` values: one JSON object per adapter, keys sorted."""
    flags = []
    for adapter in spec.get("adapters") or []:
        source = adapter.get("source") or {}
        hf = source.get("huggingface")
        if hf is not None:
            wanted = {"source": f"hf://{hf['repo']}/{hf['file']}", "revision": hf.get("revision") or "main"}
        elif source.get("url"):
            wanted = {"source": source["url"]}
        else:
            wanted = {"path": source["path"]}
        flags.append(json.dumps({"name": adapter["name"], **wanted}, sort_keys=True, separators=(",", ":")))
    return flags


def fetch_command(name: str, spec: dict[str, Any], *, adapters_only: bool = False) -> list[str]:
    """The `modelyard fetch` command line of the server's CLI contract. `adapters_only`: the base
    must already be complete in the cache (the fetch fails rather than download it)."""
    source = spec["source"]
    hf = source.get("huggingface")
    mmproj: str | None
    if hf is not None:
        main = f"hf://{hf['repo']}/{hf['file']}"
        mmproj = f"hf://{hf['repo']}/{hf['mmprojFile']}" if hf.get("mmprojFile") else None
    else:
        main = source["url"]
        mmproj = source.get("mmprojUrl")
    command = ["modelyard", "fetch", main, "--store", CACHE_MOUNT, "--id", name, "--kind", spec["kind"]]
    if mmproj:
        command += ["--mmproj", mmproj]
    if spec.get("sha256"):
        command += ["--sha256", spec["sha256"].lower()]
    if hf is not None:
        command += ["--revision", hf.get("revision") or "main"]
    if spec.get("version"):
        command += ["--version", str(spec["version"])]
    for flag in adapter_flags(spec):
        command += ["--adapter", flag]
    if adapters_only:
        command.append("--adapters-only")
    return command


def build_pvc(model: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    cache = model["spec"].get("cache") or {}
    spec: dict[str, Any] = {
        "accessModes": [cache.get("accessMode") or "ReadWriteOnce"],
        "resources": {"requests": {"storage": str(cache.get("size") or settings.cache_size)}},
    }
    # Empty means "the cluster's default class": omitting the field asks for it, while
    # an explicit "" would ask for no class at all.
    if cache.get("storageClassName"):
        spec["storageClassName"] = cache["storageClassName"]
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.pvc_name(model["metadata"]["name"]),
            "labels": common.labels(model, "cache"),
        },
        "spec": spec,
    }
    return common.owned(pvc, model)


def build_download_job(model: dict[str, Any], settings: OperatorSettings, *,
                       adapters_only: bool = False) -> dict[str, Any]:
    """The Job that fills the cache; `adapters_only` when the base is already there and only
    spec.adapters changed (the pods keep serving meanwhile). Both are named by source_hash."""
    name, spec = model["metadata"]["name"], model["spec"]
    digest = source_hash(spec)
    labels = {**common.labels(model, "download"), names.LABEL_SOURCE_HASH: digest}
    env = [common.HOME_ENV, {"name": "HF_HOME", "value": "/tmp/hf"}]
    if settings.allow_fetch:  # beside public addresses (docs/security.md#egress-policy)
        env.append({"name": "MODELYARD_ALLOW_FETCH", "value": ",".join(settings.allow_fetch)})
    token = (spec.get("source") or {}).get("tokenSecretRef")
    if token:
        env.append({
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token["name"], "key": token.get("key") or "token"}},
        })
    container = {
        "name": FETCH_CONTAINER,
        "image": settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": fetch_command(name, spec, adapters_only=adapters_only),
        "env": env,
        "resources": settings.job_resources,
        "securityContext": common.container_security(),
        "volumeMounts": [common.cache_mount(read_only=False), common.TMP_MOUNT],
    }
    # Same nodes as the inference pods: a zonal or ReadWriteOnce volume binds where its first
    # pod runs, and the inference pods must be able to mount it later.
    job_name = names.adapters_job_name(name, digest) if adapters_only else names.job_name(name, digest)
    job = common.job(job_name, labels, container, model, common.placement(spec, settings),
                     settings, backoff_limit=settings.job_backoff_limit,
                     deadline_seconds=settings.job_deadline_seconds)
    return common.owned(job, model)
