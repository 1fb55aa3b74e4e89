"""A loaded GGUF model: weights, vocabulary, tokenizer and metadata, through llama.cpp's C API.

The model's weights are shared by every context made from it, and the vocabulary
functions (tokenize, token_to_piece, is_eog) only read it, so any thread may call them
while the scheduler thread decodes.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import llama_cpp as L

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False
_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # GGML_LOG_LEVEL_WARN/ERROR


@L.llama_log_callback
def _forward_log(level, text, _user_data):
    # llama.cpp is chatty at info level; only warnings and errors reach our log.
    py_level = _LOG_LEVELS.get(level)
    if py_level is not None and text:
        log.log(py_level, "llama.cpp: %s", text.decode(errors="replace").rstrip())


def init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            L.llama_log_set(_forward_log, ctypes.c_void_p(0))
            L.llama_backend_init()
            _backend_ready = True


class ModelLoadError(Exception):
    pass


class LlamaModel:
    """Weights and vocabulary. Free with close(); contexts made from it must go first."""

    def __init__(self, path: Path | str, gpu_layers: int = 0, vocab_only: bool = False):
        init_backend()
        self.path = Path(path)
        params = L.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.vocab_only = vocab_only
        self.ptr = L.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.ptr:
            raise ModelLoadError(f"llama.cpp could not load {self.path.name}")
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = L.llama_model_n_ctx_train(self.ptr)
        self.n_embd = L.llama_model_n_embd(self.ptr)
        self.bos = L.llama_vocab_bos(self.vocab)
        self.eos = L.llama_vocab_eos(self.vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.add_eos = bool(L.llama_vocab_get_add_eos(self.vocab))
        self.has_encoder = bool(L.llama_model_has_encoder(self.ptr))
        self.size = L.llama_model_size(self.ptr)
        self.meta = self._read_meta()
        self._pieces: dict[int, bytes] = {}
        self._special_pieces: dict[int, bytes] = {}
        self._max_piece: int | None = None
        self._max_piece_lock = threading.Lock()

    def _read_meta(self) -> dict[str, str]:
        out = {}
        buf = ctypes.create_string_buffer(1 << 16)
        for i in range(L.llama_model_meta_count(self.ptr)):
            L.llama_model_meta_key_by_index(self.ptr, i, buf, len(buf))
            key = buf.value.decode(errors="replace")
            n = L.llama_model_meta_val_str_by_index(self.ptr, i, buf, len(buf))
            if n >= len(buf):  # a long value (chat templates run to tens of KB)
                big = ctypes.create_string_buffer(n + 1)
                L.llama_model_meta_val_str_by_index(self.ptr, i, big, len(big))
                out[key] = big.value.decode(errors="replace")
            else:
                out[key] = buf.value.decode(errors="replace")
        return out

    @property
    def chat_template(self) -> str | None:
        return self.meta.get("tokenizer.chat_template") or None

    def token_text(self, token: int) -> str:
        """The vocabulary's text for a token, as templates see bos_token / eos_token."""
        if token < 0:
            return ""
        return L.llama_vocab_get_text(self.vocab, token).decode(errors="replace")

    def tokenize(self, text: str | bytes, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode() if isinstance(text, str) else text
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return buf[:n]

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes a token stands for; cached, as every token is looked up again and again."""
        cache = self._special_pieces if special else self._pieces
        got = cache.get(token)
        if got is None:
            buf = ctypes.create_string_buffer(64)
            n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
            got = buf.raw[:n]
            cache[token] = got
        return got

    @property
    def max_piece_bytes(self) -> int:
        """The longest text one token stands for, in bytes (special tokens' text included): no
        text longer than n tokens times this can tokenize to n tokens or fewer. Read from the
        whole vocabulary once (0.15 s for 152k tokens), by the first caller: the manager asks
        at load, so a model is ready only once it is known. Under a lock: every ctypes call
        lets go of the GIL, and 64 requests reading the vocabulary at once on a fresh server
        took 35 s to their first bytes instead of 0.15 s (docs/benchmarks.md, "Router")."""
        if self._max_piece is None:
            with self._max_piece_lock:
                if self._max_piece is None:
                    buf = ctypes.create_string_buffer(256)
                    longest = 1
                    for token in range(self.n_vocab):
                        n = L.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
                        longest = max(longest, -n if n < 0 else n)
                    self._max_piece = longest
        return self._max_piece

    def detokenize(self, tokens: list[int], special: bool = False) -> str:
        return b"".join(self.piece(t, special) for t in tokens).decode(errors="replace")

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) tokens of a model trained to fill in the middle (code
        models: <|fim_prefix|>...), as llama.cpp's vocabulary finds them; None without."""
        ids = (L.llama_vocab_fim_pre(self.vocab), L.llama_vocab_fim_suf(self.vocab), L.llama_vocab_fim_mid(self.vocab))
        return None if -1 in ids else ids

    def infill_prompt(self, prefix: str, suffix: str) -> list[int] | None:
        """The tokens of a fill-in-the-middle prompt, laid out as llama.cpp's server lays
        them out: [BOS] <prefix token> prefix <suffix token> suffix <middle token>."""
        fim = self.fim_tokens()
        if fim is None:
            return None
        pre, suf, mid = fim
        return (([self.bos] if self.add_bos else []) + [pre] + self.tokenize(prefix, add_special=False)
                + [suf] + self.tokenize(suffix, add_special=False) + [mid])

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            L.llama_model_free(self.ptr)
            self.ptr = None
