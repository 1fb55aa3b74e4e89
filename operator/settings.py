"""One typed settings object for the operator, with MODELYARD_* environment overrides.

The Helm chart sets these variables on the operator's Deployment from values.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from modelyard.server.shared import environ
from modelyard.server.shared.facts import DEFAULT_PORT as SERVER_PORT

CACHE_MOUNT = "/cache"


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator puts into the children it builds."""

    server_image: str = field(
        default="ghcr.io/modelyard/modelyard-server:0.1.0",
        metadata={"help": "image of the download Job and the inference pods (runs `modelyard`)"},
    )
    image_pull_policy: str = field(default="IfNotPresent", metadata={"help": "pull policy of that image"})
    trainer_image: str = field(
        default="ghcr.io/modelyard/modelyard-trainer:0.1.0",
        metadata={"help": "image of the FineTunes' trainer Jobs (runs `modelyard train`; the finetune extra)"},
    )
    trainer_backoff_limit: int = field(default=0, metadata={"help": "retries of a failed trainer pod"})
    trainer_deadline_seconds: int = field(
        default=24 * 3600, metadata={"help": "a trainer Job running longer than this fails"}
    )
    job_backoff_limit: int = field(default=3, metadata={"help": "download retries before phase Failed"})
    job_deadline_seconds: int = field(
        default=6 * 3600, metadata={"help": "a download Job running longer than this fails"}
    )
    allow_fetch: list = field(
        default_factory=list,
        metadata={"help": "hosts or CIDR ranges the download Job may fetch from besides public addresses "
                          "(its MODELYARD_ALLOW_FETCH; JSON)"},
    )
    pod_allowed_paths: list = field(
        default_factory=list,
        metadata={"help": "folders under the cache mount that the inference pods' path-taking routes "
                          "(Mullama's load by path, Silicon's register and scan) may name: their "
                          "MODELYARD_ALLOWED_PATHS; empty: none (JSON)"},
    )
    job_resources: dict = field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
        metadata={"help": "resources of the download container (JSON)"},
    )
    gpu_node_selector: dict = field(
        default_factory=dict,
        metadata={"help": "nodeSelector of GPU pods whose Model sets none (JSON)"},
    )
    gpu_tolerations: list = field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        metadata={"help": "tolerations of GPU pods whose Model sets none (JSON)"},
    )
    cache_size: str = field(default="20Gi", metadata={"help": "cache PVC size when spec.cache.size is unset"})
    startup_seconds: int = field(
        default=3600,
        metadata={"help": "how long a pod may take to start serving before it is restarted"},
    )
    progress_interval: float = field(
        default=5.0, metadata={"help": "seconds between two reads of a download's progress"}
    )
    resync_interval: float = field(
        default=120.0, metadata={"help": "seconds between two full reconciliations of a Model"}
    )
    autoscale_interval: float = field(
        default=10.0, metadata={"help": "seconds between two reads of the load of Models with spec.autoscaling"}
    )
    autoscale_window: float = field(
        default=60.0, metadata={"help": "seconds of load samples that the autoscaler averages"}
    )
    inference_pool: bool = field(
        default=False,
        metadata={"help": "make an InferencePool (Gateway API Inference Extension) for every Model whose "
                          "spec.inferencePool is unset (the chart's gatewayInference.enabled)"},
    )
    endpoint_picker: str = field(
        default="",
        metadata={"help": "the endpoint picker's Service in each pool's endpointPickerRef (empty: "
                          "<pool>-epp, as GAIE's inferencepool chart names it)"},
    )
    endpoint_picker_port: int = field(default=9002, metadata={"help": "that Service's port (ext_proc)"})
    run_as_user: int = field(default=10001, metadata={"help": "uid and gid of the Job and the pods"})

    @classmethod
    def from_env(cls, environ_: Mapping[str, str] | None = None) -> "OperatorSettings":
        """Defaults, then MODELYARD_<FIELD> variables (JSON for dicts and lists)."""
        return cls(**environ.read(cls, environ_))
