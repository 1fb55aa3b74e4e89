"""A Model's spec.adapters in the operator: the download Job's flags, the source hash that
decides a new download, and the spec checks the CRD's rules make too."""
from __future__ import annotations

import json

from modelyard.operator import builders
from modelyard.operator.validation import spec_problems

from .conftest import make_model

ADAPTERS = [
    {"name": "sql", "source": {"huggingface": {"repo": "org/loras", "file": "sql.gguf"}}},
    {"name": "pirate", "source": {"url": "https://example.com/pirate.gguf"}},
    {"name": "mine", "source": {"path": "adapters/mine.gguf"}},
]


def test_the_download_job_fetches_each_adapter_after_the_base(settings):
    model = make_model(adapters=ADAPTERS)
    command = builders.build_download_job(model, settings)["spec"]["template"]["spec"]["containers"][0]["command"]
    flags = [json.loads(command[i + 1]) for i, arg in enumerate(command) if arg == "--adapter"]
    assert flags == [{"name": "sql", "source": "hf://org/loras/sql.gguf", "revision": "main"},
                     {"name": "pirate", "source": "https://example.com/pirate.gguf"},
                     {"name": "mine", "path": "adapters/mine.gguf"}]


def test_adapters_change_the_source_hash_and_none_keeps_the_old_one():
    plain = make_model()["spec"]
    assert builders.source_hash(plain) == builders.source_hash({**plain, "adapters": []})
    with_one = builders.source_hash({**plain, "adapters": ADAPTERS[:1]})
    assert with_one != builders.source_hash(plain)
    assert with_one != builders.source_hash({**plain, "adapters": ADAPTERS[:2]})


def test_adapter_problems():
    spec = make_model()["spec"]
    assert spec_problems("smollm2-360m", {**spec, "adapters": ADAPTERS}) == []
    bad = [{"name": "smollm2-360m", "source": {"path": "a.gguf"}},
           {"name": "x", "source": {"path": "/etc/x.gguf"}},
           {"name": "x", "source": {"url": "ftp://h/x", "path": "x"}},
           {"name": "y..z", "source": {"huggingface": {"repo": "nope"}}}]
    assert spec_problems("smollm2-360m", {**spec, "kind": "embed", "adapters": bad}) == [
        "spec.adapters apply only to kinds llm and vlm",
        "spec.adapters[0].name is the Model's own name: an adapter is a model id of its own",
        "spec.adapters[1].source.path is relative to the cache volume and cannot leave it",
        "spec.adapters[2].name 'x' appears twice",
        "spec.adapters[2].source: set exactly one of huggingface, url or path",
        "spec.adapters[3].name cannot contain '..'",
        "spec.adapters[3].source.huggingface needs repo (org/name) and file",
    ]


def test_what_the_cache_lacks_is_decided_in_one_place(settings):
    from modelyard.operator import planning

    from .conftest import serving

    model = make_model(adapters=ADAPTERS[:1])
    observed = serving(model, settings)
    model["status"]["baseHash"] = builders.base_hash(model["spec"])
    assert planning.cache_change(observed) == planning.NOTHING
    model["spec"]["adapters"] = ADAPTERS[:2]  # one more
    assert planning.cache_change(observed) == planning.ADAPTERS
    model["spec"]["adapters"] = []  # all removed
    assert planning.cache_change(observed) == planning.ADAPTERS
    model["spec"]["adapters"] = ADAPTERS[:1]
    model["status"]["conditions"].append({"type": "AdaptersReady", "status": "False", "reason": "AdapterFetchFailed"})
    assert planning.cache_change(observed) == planning.ADAPTERS  # back to the served list: a Job settles the cache again
    model["spec"]["source"] = {"url": "https://example.com/other.gguf"}
    assert planning.cache_change(observed) == planning.SOURCE
    model["spec"]["source"] = make_model()["spec"]["source"]
    del model["status"]["baseHash"]  # a status written before baseHash existed: a full download
    assert planning.cache_change(observed) == planning.SOURCE
