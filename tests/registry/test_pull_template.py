"""A pulled model's template layer is held to the template renderer's limits (issue 19, item 2):
a template bomb fails the pull before any model byte is fetched, and nothing is left."""
from __future__ import annotations

import pytest

from support.registries import leftovers, listed, pull

MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"


@pytest.mark.parametrize("template, said", [
    ("{{ if .Prompt }}" * 100 + "x" + "{{ end }}" * 100, "nests more than 64 blocks deep"),
    ("{{ .Prompt }}" * 6000, "Modelyard takes templates of at most 65536 bytes"),
])
def test_a_pulled_template_over_the_limits_fails_the_pull(egress_server, hostile, gguf_files, template, said):
    repo = f"bomb/{said.split()[0]}"
    hostile.model(repo, "1", [(MODEL, gguf_files["model"]), (TEMPLATE, template.encode())])
    name = f"{hostile.host}/{repo}:1"
    r = pull(egress_server, name)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("The model's template layer: ") and said in r.json()["error"]
    assert ("GET", hostile.blob_path(repo, gguf_files["model"])) not in hostile.log
    assert name not in listed(egress_server) and leftovers(egress_server, name) == []
