"""The pure parts of fine-tuning: dataset lines, loss masks, the GGUF LoRA's permutation."""
from __future__ import annotations

import numpy as np
import pytest

from modelyard.server.finetune import dataset, lora_gguf, trainer
from modelyard.server.finetune.errors import DatasetError


def test_three_shapes_and_blank_lines():
    data = (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
            b"\n"
            b'{"prompt": "a", "completion": "b"}\n'
            b'{"text": "t"}\n')
    assert dataset.parse(data) == [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"prompt": "a", "completion": "b"}, {"text": "t"}]


@pytest.mark.parametrize("line, says", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    (b'{"messages": [{"role": "bot", "content": "hi"}]}', "messages[0]"),
    (b'{"prompt": "a"}', "'prompt' and 'completion'"),
    (b'{"prompt": "a", "completion": ""}', "'completion' is empty"),
    (b'{"text": ""}', "'text'"),
    (b'{"other": 1}', "'messages', 'prompt' and 'completion', or 'text'"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_bad_line_is_named_by_its_number(line, says):
    with pytest.raises(DatasetError) as err:
        dataset.parse(b'{"text": "fine"}\n\n' + line + b"\n", "data.jsonl")
    assert str(err.value).startswith("Line 3 of data.jsonl: ")
    assert says in str(err.value)


def test_empty_and_missing(tmp_path):
    with pytest.raises(DatasetError, match="has no examples"):
        dataset.parse(b"\n  \n")
    with pytest.raises(DatasetError, match="does not exist"):
        dataset.read(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="not a file"):
        dataset.read(tmp_path)


def test_loss_on_assistant_turns_only():
    def render(messages, add_generation_prompt):
        text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    chat = {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                         {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
    pieces = trainer.segments(chat, render)
    assert pieces == [("<user>q1</><assistant>", False), ("a1</>", True),
                      ("<user>q2</><assistant>", False), ("a2</>", True)]
    ids, labels = trainer.encode(pieces, lambda text: [ord(c) for c in text], bos=1, eos=2,
                                 max_len=1000, add_eos=False)
    trained = "".join(chr(i) for i, lab in zip(ids, labels) if lab != trainer.IGNORE)
    assert trained == "a1</>a2</>"
    assert ids[0] == 1 and labels[0] == trainer.IGNORE
    ids, labels = trainer.encode([("p", False), ("c", True)], lambda t: [ord(c) for c in t], None, 2, 2, True)
    assert ids == [ord("p"), ord("c")] and labels == [trainer.IGNORE, ord("c")]  # cut to max_len


def test_permute_matches_llama_cpp_converter():
    """convert_hf_to_gguf.py's permute: within each head, even rows then odd rows interleaved
    as (first half, second half) pairs."""
    n_head, head_dim = 2, 4
    rows = np.arange(n_head * head_dim, dtype=np.float32).reshape(-1, 1)
    out = lora_gguf.permute(rows, n_head)[:, 0].tolist()
    assert out == [0, 2, 1, 3, 4, 6, 5, 7]


def test_gguf_names():
    assert lora_gguf.gguf_name("base_model.model.model.layers.12.self_attn.q_proj") == "blk.12.attn_q.weight"
    assert lora_gguf.gguf_name("base_model.model.model.layers.0.mlp.down_proj") == "blk.0.ffn_down.weight"
