"""A ReadWriteOnce cache attaches to one node at a time: every pod that mounts it (the
inference replicas, the download and adapters Jobs, a FineTune's trainer) carries the cache's
label and a required pod affinity to that label by node, so the scheduler puts them where the
volume is. The cluster test (tests/cluster/test_cache_node.py) shows the real scheduler
obeying it on two GPU nodes."""
from __future__ import annotations

from modelyard.operator import builders, names
from modelyard.operator.builders.training import build_trainer_job

from .conftest import make_model

FT = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "FineTune",
      "metadata": {"name": "sql-lora", "namespace": "ai", "uid": "uid-ft", "generation": 1},
      "spec": {"baseModel": "smollm2-360m", "dataset": {"url": "https://example.com/d.jsonl"}}}
ONE_NODE = {"labelSelector": {"matchLabels": {names.LABEL_CACHE: "smollm2-360m"}},
            "topologyKey": "kubernetes.io/hostname"}


def pod_templates(model, settings):
    """Every pod template that mounts the Model's cache, by what makes it."""
    return {
        "inference": builders.build_deployment(model, settings, source_hash="abc")["spec"]["template"],
        "download": builders.build_download_job(model, settings)["spec"]["template"],
        "adapters": builders.build_download_job(model, settings, adapters_only=True)["spec"]["template"],
        "trainer": build_trainer_job(FT, model, settings)["spec"]["template"],
    }


def required_pod_affinity(template):
    return ((template["spec"].get("affinity") or {}).get("podAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")


def test_every_pod_of_a_read_write_once_cache_follows_the_others_to_their_node(settings):
    for access in (None, "ReadWriteOnce"):  # ReadWriteOnce is the default
        model = make_model(cache={"size": "20Gi", **({"accessMode": access} if access else {})})
        for what, template in pod_templates(model, settings).items():
            assert required_pod_affinity(template) == [ONE_NODE], (access, what)
            # It matches its own term: what lets the scheduler start the first of them anywhere.
            assert template["metadata"]["labels"][names.LABEL_CACHE] == "smollm2-360m", what
    # The Job's own labels are not the pod's: the Job is not what the term selects.
    job = builders.build_download_job(make_model(), settings)
    assert names.LABEL_CACHE not in job["metadata"]["labels"]


def test_a_shared_cache_leaves_the_pods_free_to_spread(settings):
    for access in ("ReadWriteMany", "ReadWriteOncePod"):
        model = make_model(cache={"accessMode": access})
        for what, template in pod_templates(model, settings).items():
            assert required_pod_affinity(template) is None, (access, what)
            assert template["metadata"]["labels"][names.LABEL_CACHE] == "smollm2-360m", what


def test_the_models_own_affinity_is_kept_and_its_own_pod_affinity_wins(settings):
    node_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}
    preferred = [{"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}},
                                                    "topologyKey": "zone"}}]
    model = make_model(affinity={"nodeAffinity": node_affinity,
                                 "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred}})
    pod = builders.build_deployment(model, settings, source_hash="abc")["spec"]["template"]["spec"]
    assert pod["affinity"]["nodeAffinity"] == node_affinity
    assert pod["affinity"]["podAffinity"] == {"preferredDuringSchedulingIgnoredDuringExecution": preferred,
                                             "requiredDuringSchedulingIgnoredDuringExecution": [ONE_NODE]}
    assert model["spec"]["affinity"]["podAffinity"] == {"preferredDuringSchedulingIgnoredDuringExecution": preferred}
    # Required terms of the user's own: the scheduler starts a first pod only while no pod matches
    # any of its terms, so adding ours beside theirs could keep every replica Pending.
    theirs = [{"labelSelector": {"matchLabels": {"app": "redis"}}, "topologyKey": "kubernetes.io/hostname"}]
    model = make_model(affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": theirs}})
    for what, template in pod_templates(model, settings).items():
        assert required_pod_affinity(template) == theirs, what


def test_a_trainer_follows_its_base_models_cache(settings):
    base = make_model()
    base["metadata"]["name"] = "llama.3"
    template = build_trainer_job({**FT, "spec": {**FT["spec"], "baseModel": "llama.3"}}, base, settings)[
        "spec"]["template"]
    assert template["metadata"]["labels"][names.LABEL_CACHE] == "llama-3"
    assert required_pod_affinity(template)[0]["labelSelector"] == {"matchLabels": {names.LABEL_CACHE: "llama-3"}}


def test_a_trainer_without_gpus_may_join_its_bases_gpu_pods(settings):
    """Its pod affinity takes it to the base's node, a tainted GPU node: it needs their tolerations."""
    base = make_model(resources={"gpu": 1})
    gpu_pods = builders.build_deployment(base, settings, source_hash="abc")["spec"]["template"]["spec"]
    assert gpu_pods["tolerations"] == settings.gpu_tolerations
    cpu_tune = {**FT, "spec": {**FT["spec"], "resources": {"gpu": 0}}}
    trainer = build_trainer_job(cpu_tune, base, settings)["spec"]["template"]["spec"]
    assert trainer["tolerations"] == gpu_pods["tolerations"]
    assert "nvidia.com/gpu" not in str(trainer["containers"][0].get("resources"))
    # A shared cache: the trainer goes where its own placement says, as before.
    shared = make_model(resources={"gpu": 1}, cache={"accessMode": "ReadWriteMany"})
    assert "tolerations" not in build_trainer_job(cpu_tune, shared, settings)["spec"]["template"]["spec"]
    # The FineTune's own tolerations win.
    own = [{"key": "team", "operator": "Exists"}]
    mine = {**FT, "spec": {**FT["spec"], "resources": {"gpu": 0}, "tolerations": own}}
    assert build_trainer_job(mine, base, settings)["spec"]["template"]["spec"]["tolerations"] == own
