"""`make mutation`: mutmut on the pure modules, and the score of each.

mutmut 3 names a mutant after its file's path (server/http/multipart.py becomes
`server.http.multipart`) and switches it on only inside the module of that name. Here
the folders are imported as modelyard.server and modelyard.operator, so it runs in a
staging copy where they sit at src/modelyard/... (mutmut strips "src."): the names then
match what the tests import. Its settings are [tool.mutmut] in pyproject.toml.

Usage: python tests/support/mutation.py [--max-children N] [--keep] [PATTERN ...]
PATTERNs (fnmatch, e.g. 'modelyard.server.http.multipart.*') limit the run to those
mutants. Prints killed/total per module; exits non-zero when a module is under MIN_SCORE.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / ".cache" / "mutation"
MIN_SCORE = 0.80
# mutmut's exit codes per mutant: 1 (a test failed) and timeouts kill it; 0 survived;
# 33 no test covers it; 34 skipped.
SURVIVED, NO_TESTS, SKIPPED = 0, 33, 34


def stage_package(dest: Path, source: Path = ROOT, init: str = "") -> Path:
    """A fresh copy of `source`'s server/ and operator/ at dest/src/modelyard/..., the
    layout the package-dir mapping gives them; with dest/src ahead on sys.path (or
    PYTHONPATH) it is imported instead of the editable install. Returns dest/src."""
    shutil.rmtree(dest, ignore_errors=True)
    package = dest / "src" / "modelyard"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source / "server", package / "server", ignore=ignore)
    shutil.copytree(source / "operator", package / "operator", ignore=ignore)
    return dest / "src"


def stage() -> None:
    stage_package(STAGE)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tests", STAGE / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", STAGE / "pyproject.toml")


def module_of(meta: Path) -> str:
    rel = meta.relative_to(STAGE / "mutants" / "src").with_suffix("").with_suffix("")
    return ".".join(rel.parts)


def scores() -> dict[str, dict[str, int | list[str]]]:
    out: dict[str, dict] = defaultdict(lambda: {"killed": 0, "total": 0, "survived": []})
    for meta in sorted((STAGE / "mutants" / "src").rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        module = module_of(meta)
        for name, code in codes.items():
            if code is None:
                continue  # not run (a run limited by patterns)
            row = out[module]
            row["total"] += 1
            if code in (SURVIVED, NO_TESTS, SKIPPED):
                row["survived"].append(f"{name} ({'no test' if code == NO_TESTS else code})")
            else:
                row["killed"] += 1
    return out


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--max-children", default=str(os.cpu_count() or 2))
    args.add_argument("--keep", action="store_true", help="reuse the staging copy (and mutmut's cache)")
    args.add_argument("patterns", nargs="*", help="only the mutants whose names match")
    opts = args.parse_args()
    if not (opts.keep and STAGE.exists()):
        stage()
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    subprocess.run([str(mutmut), "run", "--max-children", opts.max_children, *opts.patterns],
                   cwd=STAGE, env=env, check=False)
    worst = 1.0
    print(f"\n{'module':45} {'killed':>7} {'total':>6} {'score':>6}")
    for module, row in sorted(scores().items()):
        score = row["killed"] / row["total"] if row["total"] else 1.0
        worst = min(worst, score)
        print(f"{module:45} {row['killed']:7} {row['total']:6} {score:6.0%}")
    (STAGE / "survivors.json").write_text(json.dumps(
        {m: r["survived"] for m, r in scores().items()}, indent=1))
    print(f"\nsurvivors by module: {STAGE / 'survivors.json'}; "
          f"a survivor's diff: cd {STAGE} && mutmut show <name>")
    return 0 if worst >= MIN_SCORE else 1


if __name__ == "__main__":
    sys.exit(main())
