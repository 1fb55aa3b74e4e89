"""llama.cpp in a child process, for the hostile GGUF tests: its GGUF parser with its model
loader's bounds check (the oracle the checker must agree with), and a model load as the
server's engine does it. A crash or a hang in the child is an answer, not a lost test run."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gguf_mutants import Case

# llama.cpp's GGUF parser (the library that the server's llama-cpp-python loads), plus its model
# loader's bounds check: every tensor inside the file.
GGUF_ORACLE = r"""
import ctypes, os, sys, pathlib
answer = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
import llama_cpp
lib = ctypes.CDLL(str(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
class Params(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]
lib.gguf_init_from_file.restype = ctypes.c_void_p
lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, Params]
lib.gguf_get_n_tensors.restype = ctypes.c_int64
lib.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
lib.gguf_get_data_offset.restype = ctypes.c_size_t
lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
lib.gguf_get_tensor_offset.restype = ctypes.c_size_t
lib.gguf_get_tensor_offset.argtypes = [ctypes.c_void_p, ctypes.c_int64]
lib.gguf_get_tensor_size.restype = ctypes.c_size_t
lib.gguf_get_tensor_size.argtypes = [ctypes.c_void_p, ctypes.c_int64]
lib.gguf_free.argtypes = [ctypes.c_void_p]
for line in sys.stdin:
    path = line.strip()
    ctx = lib.gguf_init_from_file(path.encode(), Params(True, None))
    if not ctx:
        print("refused", file=answer, flush=True)
        continue
    size = os.path.getsize(path)
    start = lib.gguf_get_data_offset(ctx)
    inside = all(start + lib.gguf_get_tensor_offset(ctx, i) + lib.gguf_get_tensor_size(ctx, i) <= size
                 for i in range(lib.gguf_get_n_tensors(ctx)))
    lib.gguf_free(ctx)
    print("ok" if inside else "outside", file=answer, flush=True)
"""

# A model load as the server's engine does it, then one decode step.
LOADER = r"""
import os, sys
answer = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
import llama_cpp
for line in sys.stdin:
    path = line.strip()
    try:
        llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=1, verbose=False)
    except Exception as exc:
        print("error:", type(exc).__name__, str(exc).replace("\n", " ")[:200], file=answer, flush=True)
        continue
    print("loaded", file=sys.stderr, flush=True)
    try:
        llm.eval(llm.tokenize(b"hello there", add_bos=True)[:8] or [0])
        print("served", file=answer, flush=True)
    except Exception as exc:
        print("eval error:", type(exc).__name__, str(exc).replace("\n", " ")[:200], file=answer, flush=True)
    llm.close()
"""


class Child:
    """A worker process fed one path a line; a death or a hang is the answer for that path."""

    def __init__(self, script: str, timeout: float, log: Path):
        self.script = script
        self.timeout = timeout
        self.log = log
        self.proc = None

    def _start(self):
        # No gdb backtrace on a GGML_ASSERT: it takes seconds and is not what is tested.
        env = {**os.environ, "PYTHONSAFEPATH": "1", "GGML_NO_BACKTRACE": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", self.script], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True, env=env)

    def last_words(self, since: int) -> str:
        """What the child logged for the last path: the assertion or error that stopped it."""
        with open(self.log, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        hits = [ln.strip() for ln in lines if "GGML_ASSERT" in ln or "error" in ln.lower() or "abort" in ln.lower()]
        when = "at the first decode" if "loaded" in lines else "while loading"
        return f"{when}: " + " | ".join(hits[-2:])[:300]

    def ask(self, path: Path) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.mark = self.log.stat().st_size
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if ready:
            line = self.proc.stdout.readline()
            if line:
                return line.strip()
            rc = self.proc.wait(10)
            why = self.last_words(self.mark)
            return (f"crashed ({signal.Signals(-rc).name}): {why}" if rc < 0
                    else f"exited {rc}: {why}")
        self.proc.kill()
        self.proc.wait(10)
        return f"hung (no answer in {self.timeout:.0f} s)"

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# Files the checker passes (their structure is sound) that llama.cpp still aborts on. Each is a
# GGML_ASSERT on a value, not on the layout: the engine's runner process dies of them, and the
# server says so and carries on. The key is a word of the case's description.
KNOWN_NATIVE_CRASHES = {
    "tokenizer.ggml.tokens": "two tokens with the same text: GGML_ASSERT(id_to_token.size() == "
                             "token_to_id.size()) in llama-vocab.cpp, while loading",
    "llama.block_count": "0 layers or more than LLAMA_MAX_LAYERS: GGML_ASSERT(hparams.n_layer_all > 0 "
                         "&& ...) in llama-model.cpp, while loading",
    "layer_norm_rms_epsilon": "a NaN or negative epsilon: GGML_ASSERT(eps >= 0.0f) in ggml-cpu, at the "
                              "first decode",
    "ttype at": "a tensor retyped to another type of the same size (F32 to I32): it loads, and ggml-cpu "
                "aborts at the first decode",
}


def known_crash(case: "Case") -> str | None:
    return next((why for word, why in KNOWN_NATIVE_CRASHES.items() if word in case.what), None)

