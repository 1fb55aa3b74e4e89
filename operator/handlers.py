"""The kopf handlers: each one line of docs and one call into the Controller.

They are registered in `build_registry()` rather than at import time, so that a
test or a second operator in the same process gets its own registry.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from . import names
from .controller import Controller
from .kube import Kube, load_api_client
from .reconcile import Context
from .settings import OperatorSettings

MODELS = (names.GROUP, names.VERSION, names.PLURAL)
FINETUNES = (names.GROUP, names.VERSION, names.FINETUNE_PLURAL)
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


def handle_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, ours: OperatorSettings) -> None:
    """kopf's knobs, and the Controller that every handler reaches through `memo`."""
    # Watch exactly the namespaces given: no cluster-wide list/watch of namespaces and
    # CRDs, so the RBAC can stay namespaced and minimal.
    settings.scanning.disabled = True
    # The status and the annotations of a Model belong to Modelyard; kopf keeps nothing there.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=names.GROUP)
    # The reconciler posts its own Events; kopf's "handler succeeded" lines stay in the log.
    settings.posting.level = logging.WARNING
    # Sync handlers run in this pool; the per-Model locks keep each Model to one worker.
    settings.execution.max_workers = 16
    memo.controller = Controller(Context(Kube(load_api_client()), ours))
    loop = asyncio.get_running_loop()
    memo.poller = loop.create_task(memo.controller.run(), name="modelyard poller")
    memo.autoscaler = loop.create_task(memo.controller.autoscale(), name="modelyard autoscaler")


def build_registry(ours: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        """Configure kopf, create the API client and start the poller."""
        handle_startup(settings, memo, ours)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        """Stop the poller and the autoscaler."""
        memo.poller.cancel()
        memo.autoscaler.cancel()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same credentials as the API client: in-cluster, else KUBECONFIG."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.event(*MODELS, registry=registry)
    def model_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """A Model appeared or changed: reconcile it."""
        memo.controller.handle_model_event(type, dict(body))

    @kopf.on.event(*FINETUNES, registry=registry)
    def finetune_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """A FineTune appeared or changed: run or follow its trainer Job."""
        memo.controller.handle_finetune_event(type, dict(body))

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """A download or trainer Job changed: reconcile its Model or FineTune."""
        memo.controller.handle_child_event(type, dict(body))

    @kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry)
    def deployment_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Inference pods became ready or not, or the Deployment went away: reconcile its Model."""
        memo.controller.handle_child_event(type, dict(body))

    @kopf.on.event("", "v1", "services", labels=MANAGED, registry=registry)
    def service_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """A Service of a Model changed or went away: reconcile its Model."""
        memo.controller.handle_child_event(type, dict(body))

    return registry
