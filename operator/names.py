"""Names and hashes derived from a Model: deterministic, so a restarted operator finds its children."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# The API group, labels and annotations are facts the server shares; re-exported here
# so the operator's modules name them in one way.
from modelyard.server.shared.facts import (  # noqa: E402,F401
    ANNOTATION_POD_SPEC_HASH,
    ANNOTATION_SOURCE_HASH,
    API_VERSION,
    GROUP,
    KIND,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_SOURCE_HASH,
    MANAGED_BY,
    PLURAL,
    VERSION,
)

_DNS_LABEL_MAX = 63
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def stable_hash(value: Any, length: int = 10) -> str:
    """A short hash of a JSON-able value that does not depend on key order."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def base_name(model_name: str) -> str:
    """The DNS-1035 label naming the Service (and the other children) of a Model.

    `llama-3.2-1b` becomes `llama-3-2-1b`. A name that had to be cut to 63 characters
    gets a hash of the full name, so two long names do not collide.
    """
    name = _NOT_DNS.sub("-", model_name.lower()).strip("-") or "model"
    if not name[0].isalpha():
        name = f"m-{name}"
    if len(name) > _DNS_LABEL_MAX:
        name = f"{name[:_DNS_LABEL_MAX - 7].rstrip('-')}-{stable_hash(model_name, 6)}"
    return name


def _fit(prefix: str, suffix: str, limit: int = _DNS_LABEL_MAX) -> str:
    return f"{prefix[:limit - len(suffix)].rstrip('-')}{suffix}"


def service_name(model_name: str) -> str:
    return base_name(model_name)


def deployment_name(model_name: str) -> str:
    return base_name(model_name)


def pvc_name(model_name: str) -> str:
    return _fit(base_name(model_name), "-cache", 253)


def api_key_secret_name(model_name: str) -> str:
    return _fit(base_name(model_name), "-api-key", 253)


def job_name(model_name: str, source_hash: str) -> str:
    """One Job name per (model, source): a restart finds the Job instead of making another."""
    # 63, not 253: the Job controller copies the name into a pod label value.
    return _fit(base_name(model_name), f"-fetch-{source_hash}")


def adapters_job_name(model_name: str, source_hash: str) -> str:
    """The adapters-only Job of (model, source): a name apart from the full download's, so going
    back to a list whose full download Job is still there runs a Job again."""
    return _fit(base_name(model_name), f"-adapters-{source_hash}")


def inference_pool_name(model_name: str) -> str:
    return base_name(model_name)


def endpoint_picker_service(model_name: str) -> str:
    """The Service GAIE's inferencepool Helm chart names for the picker it deploys with a pool
    of this name: the release name cut to 40 characters, then `-epp` (v1.5.0,
    config/charts/epplib/templates/_helpers.tpl)."""
    return f"{inference_pool_name(model_name)[:40]}-epp"


def endpoint(model_name: str, namespace: str, port: int) -> str:
    return f"http://{service_name(model_name)}.{namespace}.svc:{port}"


# ---- FineTune ------------------------------------------------------------------------
FINETUNE_KIND = "FineTune"
FINETUNE_PLURAL = "finetunes"
LABEL_FINETUNE = f"{GROUP}/finetune"  # the FineTune's base name, on its Job and pod
LABEL_BASE_MODEL = f"{GROUP}/base-model"  # the base Model's base name, on a trainer Job and pod
# On every pod that mounts a Model's cache volume (inference, download and trainer pods): the
# base name of the Model whose cache it is. A ReadWriteOnce cache keeps them on one node by it.
LABEL_CACHE = f"{GROUP}/cache"


def trainer_job_name(finetune_name: str) -> str:
    """One Job per FineTune (its spec is immutable): a restart finds it instead of making another."""
    return _fit(base_name(finetune_name), "-train")
