"""Real vocabularies for the generated models (modelgen.py): llama-cpp-python's sdist ships
vocab-only GGUFs of many tokenizers; these copy one's tokenizer.* fields into a model being
written, or write a smaller vocab-only GGUF cut from one. Nothing is fetched from a model hub.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDIST = ROOT / ".cache" / "llama-cpp-python"
VOCABS = SDIST / "vendor" / "llama.cpp" / "models"


def sdist_dir() -> Path:
    """llama-cpp-python's unpacked sdist, fetched on first use (tools/llama_sdist.sh)."""
    if not (SDIST / ".version").exists():
        subprocess.run(["sh", str(ROOT / "tools" / "llama_sdist.sh")], check=True)
    return SDIST


def vocab_path(name: str) -> Path:
    sdist_dir()
    return VOCABS / f"ggml-vocab-{name}.gguf"


def copy_tokenizer(writer, vocab_file: Path, chat_template: str | None | bool) -> int:
    """Copy every tokenizer.* field; returns the vocabulary size."""
    import gguf

    reader = gguf.GGUFReader(str(vocab_file))
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if key == "tokenizer.chat_template" and chat_template is not True:
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
        writer.add_key_value(key, value, vtype, sub)
    if isinstance(chat_template, str):
        writer.add_chat_template(chat_template)
    return n_vocab


CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=4)
def _vocab_fields(name: str) -> dict:
    """The tokenizer.* fields of a vocab from the sdist, as Python values, with their GGUF
    types. Parsing gpt-2's 50257 tokens takes seconds: once per process."""
    import gguf

    reader = gguf.GGUFReader(str(vocab_path(name)))
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.") and key != "tokenizer.chat_template":
            vtype = field.types[0]
            sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
            out[key] = (field.contents(), vtype, sub)
    return out


def make_vocab_gguf(path: Path, base: str = "gpt-2", n_base: int | None = None,
                    extra: tuple[str, ...] = ("<|im_start|>", "<|im_end|>"),
                    pad_to: int = 1, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """A vocab-only GGUF: a real vocabulary plus control tokens (ChatML's by default), then
    unused tokens up to a multiple of pad_to, as trainers pad embeddings (gpt-2's 50257 to
    50304). gpt-2 + ChatML is 50259 tokens: odd, and no multiple of any tile width.

    n_base keeps only the first n_base tokens of a byte-level BPE vocabulary and the merges
    that make them. In gpt-2's vocabulary token 256 + i is what merge i makes, so the cut
    is a consistent, smaller tokenizer: the same text splits into more, shorter tokens. A
    small vocabulary keeps the files small and the registry's upload check quick. The cut
    drops gpt-2's <|endoftext|> (50256): pass it in `extra` to keep one.
    """
    import gguf

    fields = dict(_vocab_fields(base))
    tokens = list(fields["tokenizer.ggml.tokens"][0])
    types = list(fields["tokenizer.ggml.token_type"][0])
    if n_base is not None:
        merges = list(fields["tokenizer.ggml.merges"][0])[: n_base - 256]
        if any(tokens[256 + i] != m.replace(" ", "") for i, m in enumerate(merges)):
            raise ValueError(f"{base}'s token order does not follow its merges: it cannot be cut")
        tokens, types = tokens[:n_base], types[:n_base]
        fields["tokenizer.ggml.merges"] = (merges, *fields["tokenizer.ggml.merges"][1:])
        # special ids past the cut would point nowhere
        fields = {k: v for k, v in fields.items() if not (k.endswith("_token_id") and v[0] >= n_base)}
    n_real = len(tokens)
    tokens += list(extra)
    types += [gguf.TokenType.CONTROL] * len(extra)
    n_pad = -len(tokens) % pad_to
    tokens += [f"<|pad_{i}|>" for i in range(n_pad)]
    types += [gguf.TokenType.UNUSED] * n_pad
    fields["tokenizer.ggml.tokens"] = (tokens, *fields["tokenizer.ggml.tokens"][1:])
    fields["tokenizer.ggml.token_type"] = (types, *fields["tokenizer.ggml.token_type"][1:])
    if "tokenizer.ggml.scores" in fields:
        scores = list(fields["tokenizer.ggml.scores"][0])[:n_real] + [0.0] * (len(tokens) - n_real)
        fields["tokenizer.ggml.scores"] = (scores, *fields["tokenizer.ggml.scores"][1:])
    u32 = gguf.GGUFValueType.UINT32
    if "<|endoftext|>" in extra:
        fields["tokenizer.ggml.bos_token_id"] = (tokens.index("<|endoftext|>"), u32, None)
        fields["tokenizer.ggml.eos_token_id"] = (tokens.index("<|endoftext|>"), u32, None)
    if "<|im_end|>" in extra:
        fields["tokenizer.ggml.eos_token_id"] = (tokens.index("<|im_end|>"), u32, None)
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, (value, vtype, sub) in fields.items():
        writer.add_key_value(key, value, vtype, sub)
    if chat_template:
        writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)

