"""What is wrong with a Model's spec, in words that say what to fix.

The CRD's schema says most of this to a real API server. The operator checks again
because a CRD can be older than the operator, and a problem must end as phase Failed
with a reason rather than as a crash loop.
"""
from __future__ import annotations

import re
from typing import Any

from modelyard.server.shared.facts import (EXECUTION_PROVIDERS, GENERATIVE_KINDS, KINDS, id_problem,
                                           kv_cache_problem, vlm_problem)

ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[A-Fa-f0-9]{64}$")
_HTTP = re.compile(r"^https?://.+")


def name_problem(name: str) -> str | None:
    """The registry's id rules (one definition, in modelyard.server.shared.facts), within
    Kubernetes' 253-character limit on names."""
    if len(name) > 253:
        return "metadata.name must be at most 253 characters"
    problem = id_problem(name)
    return f"metadata.name {problem}" if problem else None


def spec_problems(name: str, spec: dict[str, Any]) -> list[str]:
    """Every problem of the spec, empty when the Model can be served."""
    problems = [p for p in [name_problem(name)] if p]
    kind = spec.get("kind")
    if kind not in KINDS:
        problems.append(f"spec.kind must be one of {', '.join(KINDS)} (got {kind!r})")
    problems += _source_problems(spec.get("source") or {}, kind)
    sha = spec.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
        problems.append("spec.sha256 must be 64 hexadecimal characters")
    problems += _number_problems(spec)
    provider = (spec.get("onnx") or {}).get("executionProvider")
    if provider is not None and provider not in EXECUTION_PROVIDERS:
        problems.append(f"spec.onnx.executionProvider must be one of {', '.join(EXECUTION_PROVIDERS)}")
    kv = kv_cache_problem(kind, (spec.get("gguf") or {}).get("kvCacheType"))
    if kv:
        problems.append(f"spec.gguf.kvCacheType {kv}")
    problems += _autoscaling_problems(spec.get("autoscaling"))
    problems += _adapter_problems(name, kind, spec.get("adapters"))
    mode = (spec.get("cache") or {}).get("accessMode")
    if mode is not None and mode not in ACCESS_MODES:
        problems.append(f"spec.cache.accessMode must be one of {', '.join(ACCESS_MODES)}")
    return problems


def _source_problems(source: dict[str, Any], kind: Any) -> list[str]:
    hf, url = source.get("huggingface"), source.get("url")
    if (hf is None) == (url is None):
        return ["spec.source: set exactly one of huggingface or url"]
    problems = []
    if hf is not None:
        if not _REPO.match(str(hf.get("repo") or "")):
            problems.append("spec.source.huggingface.repo must look like org/name")
        if not hf.get("file"):
            problems.append("spec.source.huggingface.file is required (the file's path in the repo)")
        if source.get("mmprojUrl"):
            problems.append("spec.source.mmprojUrl goes with url; with huggingface use huggingface.mmprojFile")
        has_mmproj = bool(hf.get("mmprojFile"))
    else:
        if not _HTTP.match(str(url)):
            problems.append("spec.source.url must be an http(s) URL")
        mmproj_url = source.get("mmprojUrl")
        if mmproj_url is not None and not _HTTP.match(str(mmproj_url)):
            problems.append("spec.source.mmprojUrl must be an http(s) URL")
        has_mmproj = bool(mmproj_url)
    vlm = vlm_problem("", str(kind), has_mmproj, False,
                      field="spec.source.huggingface.mmprojFile or spec.source.mmprojUrl")
    if vlm:
        problems.append(vlm)
    token = source.get("tokenSecretRef")
    if token is not None and not (isinstance(token, dict) and token.get("name")):
        problems.append("spec.source.tokenSecretRef.name is required")
    return problems


def _number_problems(spec: dict[str, Any]) -> list[str]:
    checks = [
        ("spec.replicas", spec.get("replicas"), 0),
        ("spec.resources.gpu", (spec.get("resources") or {}).get("gpu"), 0),
        ("spec.gguf.initContextSize", (spec.get("gguf") or {}).get("initContextSize"), 1),
        ("spec.gguf.initGpuLayerSize", (spec.get("gguf") or {}).get("initGpuLayerSize"), 0),
    ]
    return _at_least(checks)


def _at_least(checks: list[tuple[str, Any, int]]) -> list[str]:
    return [
        f"{field} must be an integer of at least {minimum}"
        for field, value, minimum in checks
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum)
    ]


def _autoscaling_problems(autoscaling: Any) -> list[str]:
    if autoscaling is None:
        return []
    if not isinstance(autoscaling, dict):
        return ["spec.autoscaling must be an object"]
    if autoscaling.get("maxReplicas") is None:
        return ["spec.autoscaling.maxReplicas is required"]
    problems = _at_least([
        ("spec.autoscaling.minReplicas", autoscaling.get("minReplicas"), 0),
        ("spec.autoscaling.maxReplicas", autoscaling.get("maxReplicas"), 1),
        ("spec.autoscaling.targetRequests", autoscaling.get("targetRequests"), 1),
        ("spec.autoscaling.scaleDownDelaySeconds", autoscaling.get("scaleDownDelaySeconds"), 0),
    ])
    low, high = autoscaling.get("minReplicas", 1), autoscaling["maxReplicas"]
    if not problems and low > high:
        problems.append(f"spec.autoscaling.minReplicas ({low}) must be at most maxReplicas ({high})")
    return problems


def _adapter_problems(name: str, kind: Any, adapters: Any) -> list[str]:
    if not adapters:
        return []
    if not isinstance(adapters, list):
        return ["spec.adapters must be a list"]
    problems = []
    if kind not in GENERATIVE_KINDS:
        problems.append(f"spec.adapters apply only to kinds {' and '.join(GENERATIVE_KINDS)}")
    seen: set[str] = set()
    for i, adapter in enumerate(adapters):
        where = f"spec.adapters[{i}]"
        adapter_name = adapter.get("name") if isinstance(adapter, dict) else None
        if problem := id_problem(adapter_name):
            problems.append(f"{where}.name {problem}")
        elif adapter_name == name:
            problems.append(f"{where}.name is the Model's own name: an adapter is a model id of its own")
        elif adapter_name in seen:
            problems.append(f"{where}.name '{adapter_name}' appears twice")
        seen.add(adapter_name)
        source = (adapter.get("source") if isinstance(adapter, dict) else None) or {}
        given = [k for k in ("huggingface", "url", "path") if source.get(k)]
        if len(given) != 1:
            problems.append(f"{where}.source: set exactly one of huggingface, url or path")
        elif given == ["huggingface"] and not (_REPO.match(str(source["huggingface"].get("repo") or ""))
                                               and source["huggingface"].get("file")):
            problems.append(f"{where}.source.huggingface needs repo (org/name) and file")
        elif given == ["url"] and not _HTTP.match(str(source["url"])):
            problems.append(f"{where}.source.url must be an http(s) URL")
        elif given == ["path"] and (str(source["path"]).startswith("/") or ".." in str(source["path"]).split("/")):
            problems.append(f"{where}.source.path is relative to the cache volume and cannot leave it")
    return problems
