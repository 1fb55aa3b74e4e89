"""The id rules and the vlm rule that the server and the operator share."""
from __future__ import annotations

import pytest

from modelyard.server.shared import facts


@pytest.mark.parametrize("model_id", ["a", "A9", "smollm2-360m", "llama-3.2-1b", "a_b.c-d", "x" * 255,
                                      "a.", "a-", "9", "X", "XX.a"])
def test_valid_ids(model_id):
    assert facts.id_problem(model_id) is None


@pytest.mark.parametrize("model_id, words", [
    ("", "non-empty"), (None, "non-empty"), (7, "non-empty"), (["a"], "non-empty"),
    ("x" * 256, "at most 255"),
    ("a/b", "only letters"), ("a b", "only letters"), ("a\nb", "only letters"), ("é", "only letters"),
    ("a\\b", "only letters"), ("a%2e", "only letters"), ("a\x00", "only letters"),
    (".hidden", "start with '.'"), ("-dash", "start with '.' or '-'"), (".", "start with"),
    ("..", "start with"), ("a..b", "cannot contain '..'"), ("a..", "cannot contain '..'"),
])
def test_invalid_ids_say_why(model_id, words):
    assert words in facts.id_problem(model_id)


def test_id_length_limit_is_exact():
    assert facts.id_problem("m" * facts.MAX_ID_LENGTH) is None
    assert facts.id_problem("m" * (facts.MAX_ID_LENGTH + 1)) == "must be at most 255 characters"


def test_id_problem_messages_are_exact():
    assert facts.id_problem("") == "must be a non-empty string"
    assert facts.id_problem("a b") == "may contain only letters, digits, '-', '_' and '.'"
    assert facts.id_problem(".a") == "cannot start with '.' or '-'"
    assert facts.id_problem("a..b") == "cannot contain '..'"


@pytest.mark.parametrize("kind, source, on_disk, expected", [
    ("vlm", True, False, None),
    ("vlm", False, True, None),
    ("vlm", True, True, None),
    ("llm", False, False, None),
    ("llm", False, True, None),
    ("embed", False, False, None),
    ("vlm", False, False, "Model 'm' is a vlm and has no projector yet: send 'mmprojUrl' with the mmproj file's URL"),
    ("llm", True, False, "Field 'mmprojUrl' applies only to kind 'vlm'; model 'm' is 'llm'"),
    ("onnx", True, True, "Field 'mmprojUrl' applies only to kind 'vlm'; model 'm' is 'onnx'"),
])
def test_vlm_rule(kind, source, on_disk, expected):
    assert facts.vlm_problem("m", kind, source, on_disk) == expected


def test_vlm_rule_names_the_callers_field():
    assert "'--mmproj'" in facts.vlm_problem("m", "vlm", False, False, field="--mmproj")
    assert "'--mmproj'" in facts.vlm_problem("m", "llm", True, False, field="--mmproj")
