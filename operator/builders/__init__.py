"""Pure builders: a Model (a plain dict) in, a child manifest (a plain dict) out. No API calls."""
from .events import build_event
from .gateway import build_inference_pool, endpoint_picker_name, wants_inference_pool
from .download import base_hash, build_download_job, build_pvc, fetch_command, source_hash
from .serving import build_api_key_secret, build_deployment, build_service, pod_selector, pod_spec_hash

__all__ = [
    "base_hash",
    "build_api_key_secret",
    "build_deployment",
    "build_download_job",
    "build_event",
    "build_inference_pool",
    "build_pvc",
    "build_service",
    "endpoint_picker_name",
    "fetch_command",
    "pod_selector",
    "pod_spec_hash",
    "source_hash",
    "wants_inference_pool",
]
