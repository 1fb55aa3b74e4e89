"""RBAC derived, not copied: the chart's Role grants exactly what the operator calls.

The calls are what the real operator process sent to KMock in every scenario of these
tests (each scenario's `operator` fixture records them; the kubeconfig's token tells them
from the test's own requests). When this test runs without all of those scenarios in the
same session, it runs them first, in a pytest of their own.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from chart.binaries import ROOT, tool

from . import conftest

HERE = Path(__file__).parent


def chart_rules() -> set[tuple[str, str, str, str]]:
    """The rendered Role's rules, one (group, resource, subresource, verb) per grant."""
    done = subprocess.run([str(tool("helm")), "template", "my", str(ROOT / "charts" / "modelyard"),
                           "--namespace", "modelyard-system"], capture_output=True, text=True, check=True)
    [role] = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Role"
              and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    granted = set()
    for rule in role["rules"]:
        assert not rule.get("resourceNames"), rule  # the operator's calls carry no such limit
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    granted.add((group, plural, sub, verb))
    return granted


def scenario_files() -> list[str]:
    """The files of this folder with a test that takes the `operator` fixture."""
    uses = re.compile(r"def test_\w+\([^)]*\boperator\b")
    return sorted(str(p.relative_to(ROOT)) for p in HERE.glob("test_*.py") if uses.search(p.read_text()))


def all_scenarios_ran(request) -> bool:
    """Every test that runs the operator, in every file of this folder, ran here and passed."""
    collected = {item.nodeid.split("::")[0] for item in request.session.items}
    wanted = {str(Path(f)) for f in scenario_files()}
    ran_files = {nodeid.split("::")[0] for nodeid in conftest.SCENARIOS}
    return (wanted <= {str(Path(c)) for c in collected} and wanted <= ran_files
            and all(conftest.SCENARIOS.values()))


def calls_from_a_run_of_their_own(tmp_path) -> set[tuple[str, str, str, str]]:
    calls_file = tmp_path / "calls.jsonl"
    env = {**os.environ, conftest.CALLS_FILE: str(calls_file), "PYTHONSAFEPATH": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *scenario_files()],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-5000:]
    return {tuple(json.loads(line)) for line in calls_file.read_text().splitlines()}


def test_the_role_grants_exactly_the_operators_calls(request, tmp_path):
    if all_scenarios_ran(request):
        calls = set(conftest.OPERATOR_CALLS)
    else:
        calls = calls_from_a_run_of_their_own(tmp_path)
    assert ("modelyard.dev", "models", "", "watch") in calls  # the calls were seen at all
    granted = chart_rules()
    missing = sorted(calls - granted)
    extra = sorted(granted - calls)
    assert not missing and not extra, (
        f"the operator calls without a grant: {missing}\n"
        f"granted but never called in any scenario: {extra}")
