"""The kopf handlers: each one line of docs and one call into reconcile.py.

They are registered in `build_registry()` rather than at import, because their
intervals come from the settings.
"""
from __future__ import annotations

import logging
from typing import Any

import kopf

from . import names
from .kube import Kube, load_api_client
from .reconcile import Locks, handle_child_event, handle_progress, handle_reconcile
from .settings import OperatorSettings

MODELS = (names.GROUP, names.VERSION, names.PLURAL)
MANAGED = {names.LABEL_MANAGED_BY: names.MANAGED_BY}


def post_event(model: dict[str, Any], event_type: str, reason: str, message: str) -> None:
    kopf.event(model, type=event_type, reason=reason, message=message[:1000])


def _downloading(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") in ("Pending", "Downloading")


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, ours: OperatorSettings) -> None:
    """kopf's knobs, and the shared objects every handler gets through `memo`."""
    # The status and the annotations of a Model belong to Modelyard; kopf keeps nothing there.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=names.GROUP)
    # Users see the Events the reconciler posts, not kopf's "handler succeeded" chatter.
    settings.posting.level = logging.WARNING
    # Sync handlers run in this pool; each Model holds at most one worker at a time.
    settings.execution.max_workers = 16
    memo.settings = ours
    memo.kube = Kube(load_api_client())
    memo.locks = Locks()


def build_registry(ours: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        """Configure kopf and create the API client."""
        configure(settings, memo, ours)

    @kopf.on.event(*MODELS, registry=registry)
    def model_event(type: str | None, name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
        """A Model appeared or changed (its own status writes included): reconcile it."""
        if type == "DELETED":
            memo.locks.forget(namespace, name)
        else:
            handle_reconcile(memo.kube, memo.settings, memo.locks, post_event, namespace, name)

    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    def job_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """A download Job changed: reconcile its Model."""
        handle_child_event(memo.kube, memo.settings, memo.locks, post_event, dict(body))

    @kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry)
    def deployment_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Inference pods became ready or not, or the Deployment went away: reconcile its Model."""
        handle_child_event(memo.kube, memo.settings, memo.locks, post_event, dict(body))

    @kopf.on.event("", "v1", "services", labels=MANAGED, registry=registry)
    def service_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """A Service of a Model changed or went away: reconcile its Model."""
        handle_child_event(memo.kube, memo.settings, memo.locks, post_event, dict(body))

    @kopf.timer(*MODELS, interval=ours.progress_interval, when=_downloading, registry=registry)
    def progress(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
        """While a Model downloads, copy the fetch log's progress into status.download."""
        handle_progress(memo.kube, memo.locks, namespace, name)

    @kopf.timer(*MODELS, interval=ours.resync_interval, initial_delay=ours.resync_interval, registry=registry)
    def resync(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
        """Now and then, reconcile anyway: a failed API call or a deleted PVC is repaired."""
        handle_reconcile(memo.kube, memo.settings, memo.locks, post_event, namespace, name)

    return registry
