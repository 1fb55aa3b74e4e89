"""A vlm's multimodal projector (its mmproj file), through llama.cpp's libmtmd.

A chat prompt with image markers becomes a MultimodalPrompt in the request's thread:
libmtmd decodes each image, splits the prompt into text and image chunks, and its vision
encoder turns each image chunk into embeddings of the text model's width. The prompt's
token list holds the text's token ids and, for every position an image fills, a key
(the image's sha256, the chunk, the position) that can never equal a token id. So the
scheduler's prefix reuse matches an image only against the same image, and the prompt's
length is the number of positions it takes, images included.

The scheduler thread, which owns the llama context, decodes the embeddings into the
request's sequence (Scheduler._decode_image), after which generation runs as for text.
"""
from __future__ import annotations

import collections
import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as L
import numpy as np
from llama_cpp import mtmd_cpp as M

from modelyard.server.inference.images import ImageError, sniff
from modelyard.server.inference.llama.context_thread import EngineClosed
from modelyard.server.inference.llama.model import _LOG_LEVELS, LlamaModel, ModelLoadError, init_backend

log = logging.getLogger(__name__)

# Where an image goes in the prompt text: libmtmd's default marker, which the OpenAI
# schema puts in place of each image_url part (openai_schema.IMAGE_MARKER).
MARKER = "<__media__>"
# Embeddings of recent images, so a conversation that sends its image again every turn
# runs the vision encoder once.
EMBED_CACHE_BYTES = 64 << 20


def _no_video_options():
    # When stb_image cannot decode the bytes, libmtmd's helper tries them as a video with
    # ffprobe and ffmpeg from PATH. An image_url must never start a program: point the
    # helper at a directory that cannot hold them.
    opt = M.mtmd_helper_init_opt_default()
    opt.video_params.ffmpeg_bin_dir = b"/dev/null"
    return opt


_NO_VIDEO = _no_video_options()
_log_ready = False
_log_lock = threading.Lock()
_capture = threading.local()


@L.llama_log_callback
def _forward_log(level, text, _user_data):
    py_level = _LOG_LEVELS.get(level)
    if py_level is None or not text:
        return
    message = text.decode(errors="replace").rstrip()
    lines = getattr(_capture, "errors", None)
    if lines is not None and py_level >= logging.ERROR:
        # The caller reports it (a load failure) or it is the client's (a bad image).
        lines.append(message)
        py_level = logging.DEBUG
    log.log(py_level, "libmtmd: %s", message)


def _init_log() -> None:
    global _log_ready
    with _log_lock:
        if not _log_ready:
            # libmtmd and its helpers print at info level to stderr by default
            M.mtmd_log_set(_forward_log, ctypes.c_void_p(0))
            M.mtmd_helper_log_set(_forward_log, ctypes.c_void_p(0))
            _log_ready = True


class _Chunk:
    """An owned mtmd_input_chunk: an image's placeholder (its shape and id, not its pixels)."""

    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr

    def __del__(self):
        if self.ptr:
            M.mtmd_input_chunk_free(self.ptr)
            self.ptr = None


@dataclass(eq=False)
class ImageSpan:
    """One image chunk of a prompt: the positions it fills and their embeddings."""

    start: int  # index of its first position in the prompt
    n_tokens: int
    chunk: _Chunk
    embd: np.ndarray  # float32, n_tokens x n_embd, C order

    @property
    def end(self) -> int:
        return self.start + self.n_tokens

    def embd_ptr(self):
        return self.embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


@dataclass
class MultimodalPrompt:
    tokens: list  # token ids, and (image id, chunk, position) keys where images go
    media: tuple[ImageSpan, ...]


def _part(img, i: int) -> tuple[bytes, str]:
    """An image's bytes and where it was in the request, for messages."""
    return getattr(img, "data", img), getattr(img, "where", None) or f"image {i + 1}"


class Projector:
    """The mtmd context of one vlm. Free with close() after the engine that uses it."""

    def __init__(self, path: Path | str, model: LlamaModel, threads: int = 1, use_gpu: bool = False):
        init_backend()
        _init_log()
        self.path = Path(path)
        params = M.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = max(1, threads)
        params.print_timings = False
        params.media_marker = MARKER.encode()
        _capture.errors = []
        try:
            self.ctx = M.mtmd_init_from_file(str(self.path).encode(), model.ptr, params)
        finally:
            errors, _capture.errors = _capture.errors, None
        if not self.ctx:
            reason = "; ".join(" ".join(e.split()) for e in errors) or "see the server log"
            raise ModelLoadError(f"libmtmd could not load the projector {self.path.name}: {reason}")
        self.n_embd = L.llama_model_n_embd_inp(model.ptr)
        self.vision = bool(M.mtmd_support_vision(self.ctx))
        self.mrope = bool(M.mtmd_decode_use_mrope(self.ctx))
        # The mtmd context holds one vision graph and its output buffer: one image at a time.
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._cache_bytes = 0

    # ---- request threads -------------------------------------------------------------

    def prompt(self, text: str, add_special: bool, images: list) -> MultimodalPrompt:
        """The prompt text (one MARKER per image) and the images, ready for the scheduler.

        `images` holds bytes, or objects with .data (bytes) and .where (the request part,
        for messages). ImageError's message is meant for the client; EngineClosed means
        the model is being unloaded.
        """
        if not self.vision:
            raise ImageError("this model's projector takes audio, not images")
        if self.mrope:
            raise ImageError("this model's projector places images with M-RoPE positions "
                             "(the Qwen2-VL family), which this server does not support yet")
        markers = text.count(MARKER)
        if markers > len(images):
            raise ImageError(f"the messages' text contains {MARKER!r}, which marks where an image "
                             "goes; remove it from the text")
        if markers < len(images):
            raise ImageError(f"the chat template left out {len(images) - markers} of the "
                             f"{len(images)} images")
        bitmaps = []
        chunks = None
        try:
            for i, img in enumerate(images):
                bitmaps.append(self._bitmap(*_part(img, i)))
            chunks = M.mtmd_input_chunks_init()
            with self._lock:
                if not self.ctx:
                    raise EngineClosed("the model was unloaded while its images were prepared")
                return self._tokenize(chunks, text, add_special, bitmaps)
        finally:
            if chunks:
                M.mtmd_input_chunks_free(chunks)
            for b in bitmaps:
                M.mtmd_bitmap_free(b)

    def _bitmap(self, data: bytes, where: str):
        try:
            fmt, width, height = sniff(data)
        except ImageError as exc:
            raise ImageError(f"{where}: {exc}") from None
        if not self.ctx:
            raise EngineClosed("the model was unloaded while its images were prepared")
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        _capture.errors = []
        try:
            got = M.mtmd_helper_bitmap_init_from_buf_wrapper(self.ctx, buf, len(data), False, _NO_VIDEO)
        finally:
            _capture.errors = None
        if got.video_ctx:  # not reachable with _NO_VIDEO; never take a video for an image
            M.mtmd_helper_video_free(got.video_ctx)
            if got.bitmap:
                M.mtmd_bitmap_free(got.bitmap)
            raise ImageError(f"{where}: the data is a video, not an image")
        if not got.bitmap:
            raise ImageError(f"{where}: the {fmt} image ({width}x{height}) could not be decoded; "
                             "it is corrupt or truncated")
        return got.bitmap

    def _tokenize(self, chunks, text: str, add_special: bool, bitmaps: list) -> MultimodalPrompt:
        raw = text.encode()
        inp = M.mtmd_input_text(raw, len(raw), add_special, True)
        array = (M.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        rc = M.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), array, len(bitmaps))
        if rc == 1:
            raise ImageError("the number of images does not match the image places in the prompt")
        if rc != 0:
            raise ImageError(f"the projector could not prepare the images (libmtmd error {rc})")
        tokens: list = []
        media: list[ImageSpan] = []
        seen: collections.Counter = collections.Counter()
        n = ctypes.c_size_t(0)
        for i in range(M.mtmd_input_chunks_size(chunks)):
            chunk = M.mtmd_input_chunks_get(chunks, i)
            kind = M.mtmd_input_chunk_get_type(chunk)
            if kind == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                ids = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                tokens.extend(ids[:n.value])
                continue
            if kind != M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                raise ImageError("the projector made a non-image chunk from an image")
            # An image may be several chunks (tiles and an overview): all carry the image's id.
            # libmtmd names an image by the sha256 of its bytes; one without a name matches nothing.
            image_id = (M.mtmd_input_chunk_get_id(chunk) or b"").decode() or f"anonymous-{os.urandom(8).hex()}"
            key = (image_id, seen[image_id])
            seen[image_id] += 1
            n_tokens = M.mtmd_input_chunk_get_n_tokens(chunk)
            if M.mtmd_input_chunk_get_n_pos(chunk) != n_tokens:
                raise ImageError("this projector's image positions differ from its token count, "
                                 "which this server does not support yet")
            embd = self._encode(chunk, key, n_tokens)
            span = ImageSpan(len(tokens), n_tokens, _Chunk(M.mtmd_input_chunk_get_placeholder(chunk)), embd)
            tokens.extend((image_id, key[1], j) for j in range(n_tokens))
            media.append(span)
        if media and media[-1].end == len(tokens):
            # The first answer token is sampled from the last prompt position's logits,
            # which an image decode does not produce. Chat templates always end in text.
            raise ImageError("the prompt ends with an image; add text after it")
        return MultimodalPrompt(tokens, tuple(media))

    def _encode(self, chunk, key: tuple, n_tokens: int) -> np.ndarray:
        """The chunk's embeddings through the vision encoder, or from the cache. Under the lock."""
        got = self._cache.get(key)
        if got is not None:
            self._cache.move_to_end(key)
            return got
        rc = M.mtmd_encode_chunk(self.ctx, chunk)
        if rc != 0:
            raise ImageError(f"the vision encoder failed on an image (libmtmd error {rc})")
        out = M.mtmd_get_output_embd(self.ctx)
        embd = np.ctypeslib.as_array(out, shape=(n_tokens * self.n_embd,)).copy()
        self._cache[key] = embd
        self._cache_bytes += embd.nbytes
        while self._cache_bytes > EMBED_CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return embd

    # ---- the scheduler thread --------------------------------------------------------

    def decode(self, lctx, span: ImageSpan, n_past: int, seq: int, n_batch: int) -> int:
        """Decode an image's embeddings into `seq` at n_past. 0 or llama.cpp's error code."""
        new_n_past = L.llama_pos(0)
        rc = M.mtmd_helper_decode_image_chunk(
            self.ctx, lctx, span.chunk.ptr, span.embd_ptr(), n_past, seq, n_batch,
            ctypes.byref(new_n_past), M.mtmd_helper_post_decode_callback(), None)
        if rc == 0 and new_n_past.value != n_past + span.n_tokens:
            return -1
        return rc

    def close(self) -> None:
        with self._lock:  # after the image being encoded, if any
            if self.ctx:
                M.mtmd_free(self.ctx)
                self.ctx = None
