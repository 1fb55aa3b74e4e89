"""The manifest builders, as pure functions: a Model dict in, a manifest dict out."""
import copy

import kubernetes_validate
import pytest

from modelyard.operator import builders, names
from modelyard.operator.settings import OperatorSettings

from .conftest import make_model

K8S_VERSION = "1.33.0"


def container(manifest):
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_every_child_is_owned_by_its_model(model, settings):
    digest = builders.source_hash(model["spec"])
    children = [
        builders.build_pvc(model, settings),
        builders.build_download_job(model, settings),
        builders.build_deployment(model, settings, source_hash=digest),
        builders.build_service(model),
        builders.build_api_key_secret(model, "k"),
    ]
    for child in children:
        assert child["metadata"]["namespace"] == "ai"
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "name": "smollm2-360m",
            "uid": "uid-smollm2", "controller": True, "blockOwnerDeletion": True,
        }]
        assert child["metadata"]["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY
        # The real schemas of Kubernetes, unknown fields rejected.
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_pvc_defaults_and_overrides(model, settings):
    pvc = builders.build_pvc(model, settings)
    assert pvc["metadata"]["name"] == "smollm2-360m-cache"
    assert pvc["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}
    model["spec"]["cache"] = {"size": "50Gi", "storageClassName": "fast", "accessMode": "ReadWriteMany"}
    pvc = builders.build_pvc(model, settings)
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "50Gi"}},
                           "storageClassName": "fast"}


def test_fetch_command_for_huggingface(model):
    model["spec"]["sha256"] = "AB" * 32
    assert builders.fetch_command("smollm2-360m", model["spec"]) == [
        "modelyard", "fetch", "hf://HuggingFaceTB/SmolLM2-360M-Instruct-GGUF/smollm2-360m-instruct-q8_0.gguf",
        "--store", "/cache", "--id", "smollm2-360m", "--kind", "llm", "--sha256", "ab" * 32, "--revision", "main",
        "--version", "1.0.0",
    ]


def test_fetch_command_for_a_vlm_url():
    spec = make_model(kind="vlm", source={"url": "https://h/m.gguf", "mmprojUrl": "https://h/p.gguf"})["spec"]
    assert builders.fetch_command("v", spec) == [
        "modelyard", "fetch", "https://h/m.gguf", "--store", "/cache", "--id", "v", "--kind", "vlm",
        "--mmproj", "https://h/p.gguf", "--version", "1.0.0"]


def test_download_job(model, settings):
    model["spec"]["source"]["tokenSecretRef"] = {"name": "hf-token", "key": "token"}
    job = builders.build_download_job(model, settings)
    digest = builders.source_hash(model["spec"])
    assert job["metadata"]["name"] == f"smollm2-360m-fetch-{digest}"
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == 6 * 3600
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 10001
    fetch = container(job)
    assert fetch["image"] == "example.com/modelyard-server:test"
    assert fetch["resources"]["limits"]["memory"] == "1Gi"
    assert fetch["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}} in fetch["env"]
    assert {"name": "cache", "mountPath": "/cache", "readOnly": False} in fetch["volumeMounts"]
    # The pods of the Job carry the source hash: the progress reader finds them by it.
    assert job["spec"]["template"]["metadata"]["labels"][names.LABEL_SOURCE_HASH] == digest
    # It lands where the GPU pods will, so the volume binds there.
    assert pod["tolerations"] == settings.gpu_tolerations


def test_the_download_job_allows_what_the_operator_was_told(model, settings):
    """download.allowFetch reaches the Job's `modelyard fetch` as MODELYARD_ALLOW_FETCH; by
    default the Job has none, and fetches from public addresses only."""
    assert not [e for e in container(builders.build_download_job(model, settings))["env"]
                if e["name"] == "MODELYARD_ALLOW_FETCH"]
    told = OperatorSettings(server_image=settings.server_image, allow_fetch=["models.internal", "10.0.0.0/8"])
    env = container(builders.build_download_job(model, told))["env"]
    assert {"name": "MODELYARD_ALLOW_FETCH", "value": "models.internal,10.0.0.0/8"} in env


def test_source_hash_follows_the_source_only(model):
    digest = builders.source_hash(model["spec"])
    assert builders.source_hash(make_model(replicas=3, gguf={"initContextSize": 8192})["spec"]) == digest
    token = make_model()
    token["spec"]["source"]["tokenSecretRef"] = {"name": "other"}
    assert builders.source_hash(token["spec"]) == digest
    main = make_model()
    main["spec"]["source"]["huggingface"]["revision"] = "main"
    assert builders.source_hash(main["spec"]) == digest
    for changed in (make_model(kind="embed"), make_model(sha256="a" * 64), make_model(source={"url": "https://x"})):
        assert builders.source_hash(changed["spec"]) != digest


def test_deployment_serves_the_model_on_the_gpu(model, settings):
    deployment = builders.build_deployment(model, settings, source_hash="abc")
    pod = deployment["spec"]["template"]["spec"]
    server = container(deployment)
    assert server["args"] == ["serve", "--host", "0.0.0.0", "--port", "8083", "--store", "/cache",
                              "--preload", "smollm2-360m"]
    assert server["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                   "limits": {"memory": "4Gi", "nvidia.com/gpu": "1"}}
    assert {"name": "cache", "mountPath": "/cache", "readOnly": True} in server["volumeMounts"]
    assert pod["volumes"][0] == {"name": "cache", "persistentVolumeClaim": {
        "claimName": "smollm2-360m-cache", "readOnly": True}}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600
    assert server["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                         "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "MODELYARD_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "smollm2-360m-api-key", "key": "key"}}} in server["env"]
    assert {"name": "MODELYARD_INIT_CONTEXT_SIZE", "value": "4096"} in server["env"]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    # The selector matches the pods, and the Service selects the same pods.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert builders.build_service(model)["spec"]["selector"] == selector


def test_placement_from_the_spec_replaces_the_defaults(settings):
    model = make_model(nodeSelector={"pool": "a100"}, tolerations=[], affinity={"nodeAffinity": {}})
    pod = builders.build_deployment(model, settings, source_hash="abc")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert "tolerations" not in pod  # an explicit empty list: no default tolerations
    cpu = make_model(resources={})
    pod = builders.build_deployment(cpu, settings, source_hash="abc")["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert "limits" not in container({"spec": {"template": {"spec": pod}}})["resources"]


def test_own_api_key_secret_is_used(model, settings):
    model["spec"]["apiKeySecretRef"] = {"name": "team-key", "key": "api"}
    server = container(builders.build_deployment(model, settings, source_hash="abc"))
    assert {"name": "MODELYARD_API_KEY", "valueFrom": {"secretKeyRef": {"name": "team-key", "key": "api"}}} \
        in server["env"]


def test_pod_spec_hash_decides_rollouts(model, settings):
    def digest(m, source="abc"):
        return builders.build_deployment(m, settings, source_hash=source)["metadata"]["annotations"][
            names.ANNOTATION_POD_SPEC_HASH]

    base = digest(model)
    assert digest(copy.deepcopy(model)) == base
    assert digest(make_model(replicas=5)) == base  # scaling is not a new pod spec
    assert digest(model, source="def") != base
    assert digest(make_model(gguf={"initContextSize": 8192})) != base
    assert digest(make_model(resources={"gpu": 2})) != base
    assert digest(model) == digest(model)
    deployment = builders.build_deployment(model, settings, source_hash="abc")
    assert builders.pod_spec_hash(deployment["spec"]["template"]) == base


@pytest.mark.parametrize("name", ["llama-3.2-1b", "a" * 120])
def test_children_of_awkward_names_validate(name, settings):
    model = make_model()
    model["metadata"]["name"] = name
    for child in (builders.build_service(model), builders.build_download_job(model, settings),
                  builders.build_deployment(model, settings, source_hash="abc")):
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
        assert len(child["metadata"]["name"]) <= 63


def test_settings_from_env():
    settings = OperatorSettings.from_env({
        "MODELYARD_SERVER_IMAGE": "img:1", "MODELYARD_JOB_BACKOFF_LIMIT": "5",
        "MODELYARD_GPU_NODE_SELECTOR": '{"gpu": "true"}', "MODELYARD_PROGRESS_INTERVAL": "2.5"})
    assert settings.server_image == "img:1"
    assert settings.job_backoff_limit == 5
    assert settings.gpu_node_selector == {"gpu": "true"}
    assert settings.progress_interval == 2.5
    with pytest.raises(ValueError):
        OperatorSettings.from_env({"MODELYARD_GPU_TOLERATIONS": "{}"})


def test_event_about_a_model():
    from modelyard.operator.builders.events import build_event

    model = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model",
             "metadata": {"name": "m1", "namespace": "ai", "uid": "u-1"}}
    assert build_event(model, "Warning", "DownloadFailed", "x" * 1500, "2026-01-02T03:04:05Z") == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "m1.", "namespace": "ai"},
        "involvedObject": {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "name": "m1",
                           "namespace": "ai", "uid": "u-1"},
        "type": "Warning",
        "reason": "DownloadFailed",
        "message": "x" * 1000,  # the API server refuses longer ones
        "source": {"component": "modelyard-operator"},
        "reportingComponent": "modelyard.dev/operator",
        "reportingInstance": "modelyard-operator",
        "firstTimestamp": "2026-01-02T03:04:05Z",
        "lastTimestamp": "2026-01-02T03:04:05Z",
        "count": 1,
    }
    # A body without apiVersion and kind (as kopf may hand it) still names the Model.
    bare = {"metadata": {"name": "m2", "namespace": "ns"}}
    event = build_event(bare, "Normal", "Ready", "ok", "t")
    assert event["involvedObject"] == {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model",
                                       "name": "m2", "namespace": "ns", "uid": None}
    assert event["message"] == "ok"
    # The object is named as it was given.
    other = {"apiVersion": "modelyard.dev/v1beta1", "kind": "OtherModel", "metadata": bare["metadata"]}
    named = build_event(other, "Normal", "Ready", "ok", "t")["involvedObject"]
    assert (named["apiVersion"], named["kind"]) == ("modelyard.dev/v1beta1", "OtherModel")


def test_the_kv_cache_type_reaches_the_pods_and_rolls_them(settings):
    plain = builders.build_deployment(make_model(), settings, source_hash="abc")
    assert not any(e["name"] == "MODELYARD_KV_CACHE_TYPE" for e in container(plain)["env"])
    q8 = builders.build_deployment(make_model(gguf={"kvCacheType": "q8_0"}), settings, source_hash="abc")
    assert {"name": "MODELYARD_KV_CACHE_TYPE", "value": "q8_0"} in container(q8)["env"]
    assert q8["spec"]["template"]["metadata"]["annotations"] != plain["spec"]["template"]["metadata"]["annotations"]
