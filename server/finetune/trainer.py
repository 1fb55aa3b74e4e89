"""The LoRA trainer, run as a child process of the server (`python -m
modelyard.server.finetune.trainer SPEC.json`), never in the serving process: torch,
transformers and peft (the `finetune` extra) are imported here only.

It loads the GGUF base with transformers (which dequantizes it and undoes llama.cpp's q/k
permutation), trains a peft LoRA on the last `lora_layers` layers with the threads it is
given, and writes the adapter as a GGUF LoRA (lora_gguf.py) to the spec's `output`.
Progress goes to stdout as JSON lines (jobs.py reads them):
`{"event": "start", "total_steps": N}`, `{"event": "step", "step", "epoch", "loss",
"tokens_per_second"}`, `{"event": "done"}`. Failures go to stderr and a non-zero exit.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from modelyard.server.finetune import dataset, lora_gguf
from modelyard.server.finetune.spec import Spec, total_steps

IGNORE = -100  # the label transformers' loss skips


def segments(example: dict, render) -> list[tuple[str, bool]]:
    """An example as (text, trained) pieces. `render(messages, add_generation_prompt)` is the
    base's chat template. An assistant turn is what the template adds after the generation
    prompt, so the prompt part is the text the server gives the model when it serves."""
    if "text" in example:
        return [(example["text"], True)]
    if "prompt" in example:
        return [(example["prompt"], False), (example["completion"], True)]
    out: list[tuple[str, bool]] = []
    done = ""
    messages = example["messages"]
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:i], True)
        full = render(messages[:i + 1], False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template does not render a conversation as a prefix of "
                             "its continuation; use prompt/completion lines instead")
        out += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return out


def encode(pieces: list[tuple[str, bool]], tokenize, bos: int | None, eos: int | None,
           max_len: int, add_eos: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels (IGNORE where no loss is taken), cut to `max_len`."""
    ids: list[int] = [bos] if bos is not None else []
    labels: list[int] = [IGNORE] * len(ids)
    for text, trained in pieces:
        tokens = tokenize(text)
        ids += tokens
        labels += tokens if trained else [IGNORE] * len(tokens)
    if add_eos and eos is not None:
        ids.append(eos)
        labels.append(eos)
    return ids[:max_len], labels[:max_len]


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def train(spec: Spec) -> None:
    # cuBLAS is deterministic only with a fixed workspace (torch's reproducibility notes)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(spec.threads)
    random.seed(spec.seed)
    np.random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    torch.use_deterministic_algorithms(True)

    examples = dataset.read(Path(spec.dataset))
    base = Path(spec.base)
    tokenizer = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    model = AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name,
                                                 dtype=torch.float32)
    config = model.config
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU Job's, when it has one
    n_layers = config.num_hidden_layers
    first = max(n_layers - spec.lora_layers, 0)
    model = get_peft_model(model, LoraConfig(
        r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
        target_modules=lora_gguf.TARGET_MODULES, layers_to_transform=list(range(first, n_layers)),
        bias="none", task_type="CAUSAL_LM")).to(device)

    def render(messages, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)

    def tokenize(text):
        return tokenizer.encode(text, add_special_tokens=False) if text else []

    bos = tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", False) else None
    rows = []
    for example in examples:
        pieces = segments(example, render)
        # A chat's template closes each assistant turn itself; plain text ends with eos.
        rows.append(encode(pieces, tokenize, bos, tokenizer.eos_token_id, spec.max_seq_length,
                           add_eos="messages" not in example))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate)
    order = torch.Generator().manual_seed(spec.seed)
    steps = total_steps(len(rows), spec.batch_size, spec.epochs)
    emit("start", total_steps=steps, examples=len(rows), trainable=sum(
        p.numel() for p in model.parameters() if p.requires_grad))
    model.train()
    step = 0
    for epoch in range(spec.epochs):
        perm = torch.randperm(len(rows), generator=order).tolist()
        for start in range(0, len(perm), spec.batch_size):
            began = time.perf_counter()
            batch = [rows[i] for i in perm[start:start + spec.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=device)
            labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in batch], device=device)
            mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=device)
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            tokens = int(mask.sum())
            emit("step", step=step, epoch=epoch + 1, loss=float(loss.detach()),
                 tokens_per_second=tokens / max(time.perf_counter() - began, 1e-9))

    pairs = {}
    for module_name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            pairs[module_name] = (module.lora_A["default"].weight.detach().cpu().numpy(),
                                  module.lora_B["default"].weight.detach().cpu().numpy())
    lora_gguf.write(Path(spec.output), pairs, architecture(base), config.num_attention_heads,
                    config.num_key_value_heads, spec.lora_alpha)
    emit("done")


def architecture(base: Path) -> str:
    from modelyard.server.registry.formats import gguf_metadata

    return gguf_metadata(base).get("general.architecture", "")


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(Path(argv[0]).read_text()))
    train(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
