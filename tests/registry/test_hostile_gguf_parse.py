"""Hostile GGUF files against the upload check's pure checker and llama.cpp's own GGUF
parser (in a child process, so that a crash there is a finding, not a lost test run): the two
must agree on every case. The cases are gguf_mutants.py's; their files go through the server
and llama.cpp's loader in test_hostile_gguf_load.py.
"""
from __future__ import annotations

import time

from llama_children import GGUF_ORACLE, Child
from modelyard.server.registry.formats import gguf_problem


def test_the_valid_files_pass(gguf_bases):
    for base in gguf_bases:
        assert gguf_problem(base.data) is None, base.name


def test_every_case_is_refused_clearly_or_agrees_with_llama_cpp(gguf_cases, tmp_path):
    """The checker's verdict on all cases, against llama.cpp's own parser and bounds check.

    Accepted means llama.cpp parses it and every tensor lies in the file. Refused means llama.cpp
    refuses it or a tensor lies outside the file, with one exception: a tensor type that
    llama.cpp knows but the gguf package cannot size, which the checker refuses as unknown.
    """
    oracle = Child(GGUF_ORACLE, timeout=30, log=tmp_path / "oracle.log")
    path = tmp_path / "case.gguf"
    disagreements, missing_words, crashes = [], [], []
    slowest = 0.0
    try:
        for case in gguf_cases:
            t0 = time.perf_counter()
            problem = gguf_problem(case.data)
            slowest = max(slowest, time.perf_counter() - t0)
            assert problem is None or (isinstance(problem, str) and problem), case
            path.write_bytes(case.data)
            verdict = oracle.ask(path)
            if verdict.startswith(("crashed", "hung", "exited")):
                crashes.append((case.index, case.what, verdict))
                continue
            if (problem is None) != (verdict == "ok"):
                if not (problem and "unknown ggml type" in problem and verdict == "ok"):
                    disagreements.append((case.index, case.base, case.what, problem, verdict))
            if case.must_refuse is not None and (problem is None or case.must_refuse not in problem):
                missing_words.append((case.index, case.base, case.what, case.must_refuse, problem))
    finally:
        oracle.close()
    refused = sum(gguf_problem(c.data) is not None for c in gguf_cases)
    print(f"\n{len(gguf_cases)} cases: {refused} refused, {len(gguf_cases) - refused} accepted; "
          f"slowest check {slowest * 1000:.1f} ms")
    assert not crashes, f"llama.cpp's GGUF parser crashed or hung: {crashes}"
    assert not disagreements, "\n".join(map(str, disagreements))
    assert not missing_words, "\n".join(map(str, missing_words))
    assert refused > len(gguf_cases) // 2  # the mutations are hostile: most must be refused
    assert slowest < 0.5

