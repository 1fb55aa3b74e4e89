"""Planted bugs: a test written against code that was already right must fail when the
claim it holds breaks. Each plant is a small, realistic bug in a staged copy of the code
(never in the working tree, where others run tests); its test must pass on the clean
copy and fail on the planted one.

The copy is staged as mutation.py stages its own (server/ and operator/ at
<dir>/src/modelyard/...), and <dir>/src goes first on PYTHONPATH, which the gunicorn
server the tests start, and its runner processes, inherit. The staged package's
__init__ says where it was imported from on stderr, so the server log shows that the
server ran the staged copy; the script checks that too.

Usage: python tests/support/plant.py [--commit REV] [--dir DIR] [NAME ...]
REV: stage server/ and operator/ from that commit (git archive) instead of the working
tree, which other people may be editing. Exits non-zero unless every plant's test
passed clean and failed planted.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation import ROOT, stage_package  # noqa: E402

TRACE = "modelyard imported from "
PULL_LIMITS = "tests/registry/test_pull_limits.py"
INIT = f"import sys\nprint(f{TRACE!r} + __file__, file=sys.stderr, flush=True)\n"


@dataclass
class Plant:
    test: str  # one or more pytest node ids, separated by spaces
    path: str  # under the staged modelyard/
    old: str
    new: str
    bug: str


PLANTS = {
    # JSON mode without a schema falls through to free text: the grammar is not applied.
    "json-object-without-grammar": Plant(
        test="tests/inference/test_chat.py::test_json_object_answer_parses",
        path="server/inference/grammar.py",
        old='''            return for_schema(schema)
        from llama_cpp.llama_grammar import JSON_GBNF

        return JSON_GBNF
''',
        new='''            return for_schema(schema)
        return None
''',
        bug="response_format json_object without a schema gets no grammar (free text)",
    ),
    # llama.cpp's examples sample "the last logits" (-1): right for one sequence, wrong
    # for every sequence of a batch but the last.
    "batch-samples-the-last-row": Plant(
        test="tests/inference/test_sampling.py::test_all_eight_concurrent_streams_equal_each_request_alone",
        path="server/inference/llama/scheduler.py",
        old="token = slot.sampler.sample(self.ctx, slot.out_index)",
        new="token = slot.sampler.sample(self.ctx, -1)",
        bug="each sequence samples from the batch's last logits row (-1) instead of its own",
    ),
    # Unloading ends the sequences in flight as if cancelled: the stream looks finished.
    "unload-ends-streams-quietly": Plant(
        test="tests/inference/test_lifecycle.py::test_unload_during_a_generation",
        path="server/inference/llama/scheduler.py",
        old='''                slot.req.out.put(Failed(f"model '{self.name}' was unloaded"))
                self._release(slot)
''',
        new='''                self._finish(slot, "cancelled")
''',
        bug="an unload ends the sequences in flight like a cancel, without an error",
    ),
    # Unloading forgets the model but closes nothing: its runner goes on generating.
    "unload-leaves-the-generation-running": Plant(
        test="tests/inference/test_lifecycle.py::test_unload_during_a_generation",
        path="server/inference/manager.py",
        old="""        item.engine.close()  # fails in-flight requests, joins the engine thread
        if item.projector is not None:
            item.projector.close()
        if item.model is not None:
            item.model.close()
""",
        new="",
        bug="an unload drops the model from the loaded ones without closing its engine or model",
    ),
    # Issue 19, item 10: each integrity check of a pull, removed; its hostile-registry test fails.
    "pull-ignores-the-model-digest": Plant(
        test=f"{PULL_LIMITS}::test_a_layer_that_does_not_match_its_digest_fails_the_pull[model]",
        path="server/registry/pulls.py",
        old='sha256=_hex(plan.digests.get("model")),',
        new="sha256=None,",
        bug="a pull does not check the model layer against its digest (Probllama's class of bug)",
    ),
    "pull-ignores-the-projector-digest": Plant(
        test=f"{PULL_LIMITS}::test_a_layer_that_does_not_match_its_digest_fails_the_pull[projector]",
        path="server/registry/pulls.py",
        old="        _check_projector_digest(store, plan)\n",
        new="",
        bug="a pull does not check the projector layer against its digest",
    ),
    "pull-ignores-text-layer-digests": Plant(
        test=" ".join(f"{PULL_LIMITS}::test_a_layer_that_does_not_match_its_digest_fails_the_pull[{t}]"
                      for t in ("template", "params", "config")),
        path="server/registry/oci.py",
        old="""        if digest_of(data) != layer.digest:
            raise FetchError(f"{what} does not match its digest")
""",
        new="",
        bug="a pull takes text layers (template, params) and the config blob without their digests",
    ),
    "pull-skips-the-config-blob": Plant(
        test=f"{PULL_LIMITS}::test_a_layer_that_does_not_match_its_digest_fails_the_pull[config]",
        path="server/registry/pulls.py",
        old="            _check_config(client.small_blob(manifest.config, oci.CONFIG_LIMIT))\n",
        new="            pass\n",
        bug="a pull never fetches nor checks the manifest's config blob",
    ),
    "manifest-takes-a-layer-twice": Plant(
        test=f"{PULL_LIMITS}::test_a_manifest_that_names_a_layer_twice_is_refused",
        path="server/registry/oci.py",
        old="    for media_type in SINGLE:\n",
        new="    for media_type in ():\n",
        bug="a manifest that names a model or template layer twice is taken (the first one wins)",
    ),
    "model-layer-past-its-declared-size": Plant(
        test=f"{PULL_LIMITS}::test_a_model_layer_stops_at_its_declared_size",
        path="server/registry/fetch.py",
        old="if limit is not None and self.writer.size + len(chunk) > limit:",
        new="if False:",
        bug="a model layer's body is written past its declared size (an endless one fills the disk)",
    ),
    "push-sends-a-changed-file": Plant(
        test="tests/registry/test_egress.py::test_a_push_never_completes_a_layer_whose_file_changed",
        path="server/registry/oci.py",
        old="            if not ahead and (",
        new="            if False and (",
        bug="a push uploads a file changed since it was recorded under the recorded digest",
    ),
    "upload-follows-any-location": Plant(
        test="tests/registry/test_egress.py::test_an_upload_location_off_the_registry_is_refused",
        path="server/registry/oci.py",
        old="        if _origin(url) != _origin(base):",
        new="        if False:",
        bug="a push uploads wherever the registry's Location points",
    ),
}


def stage(dest: Path, commit: str | None) -> Path:
    if commit is None:
        return stage_package(dest, init=INIT)
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "archive", commit, "server", "operator"], cwd=ROOT,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        return stage_package(dest, source=Path(tree), init=INIT)


def run_test(src: Path, test: str, basetemp: Path) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONSAFEPATH": "1",
           "PYTHONPATH": os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])}
    probe = subprocess.run([sys.executable, "-c", "import modelyard.server as s; print(s.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not probe.startswith(str(src)):
        raise SystemExit(f"the test process would import {probe}, not the staged copy in {src}")
    done = subprocess.run([sys.executable, "-m", "pytest", *test.split(), "-x", "-q", "-p", "no:randomly",
                           "-p", "no:cacheprovider", f"--basetemp={basetemp}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    logs = [p for p in basetemp.rglob("*.log") if TRACE in p.read_text(errors="replace")]
    staged = [p for p in logs if f"{TRACE}{src}" in p.read_text(errors="replace")]
    if not staged or len(staged) != len(logs):
        raise SystemExit(f"{test}: no server log shows the staged copy in {src} "
                         f"(logs with a trace: {[str(p) for p in logs]})")
    return done.returncode == 0, done.stdout[-6000:]


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--commit", help="stage from this commit instead of the working tree")
    args.add_argument("--dir", default="/tmp/plant", help="where to stage (removed first)")
    args.add_argument("names", nargs="*", help=f"plants to run (default all: {', '.join(PLANTS)})")
    opts = args.parse_args()
    ok = True
    for name in opts.names or PLANTS:
        plant = PLANTS[name]
        dest = Path(opts.dir) / name
        src = stage(dest, opts.commit)
        clean_passed, clean_out = run_test(src, plant.test, dest / "clean")
        target = src / "modelyard" / plant.path
        code = target.read_text()
        if code.count(plant.old) != 1:
            raise SystemExit(f"{name}: the code to plant into is not in {plant.path} exactly once")
        target.write_text(code.replace(plant.old, plant.new))
        planted_passed, planted_out = run_test(src, plant.test, dest / "planted")
        caught = clean_passed and not planted_passed
        ok &= caught
        print(f"== {name}: {plant.bug}\n   {plant.test}\n   clean copy: "
              f"{'passed' if clean_passed else 'FAILED'}; planted: {'passed' if planted_passed else 'failed'}"
              f" -> {'caught' if caught else 'NOT CAUGHT'}")
        if not clean_passed:
            print(clean_out)
        print("   the planted run's failure:\n" + "\n".join(
            "     " + line for line in planted_out.splitlines() if line.startswith(("E ", ">", "FAILED"))))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
