"""OpenAI response bodies and stream chunks, built from plain values. Pure functions."""
from __future__ import annotations

import base64
import time
import uuid

import numpy as np



def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int, cached: int = 0) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


SSE_DONE = b"data: [DONE]\n\n"


# ---- chat ------------------------------------------------------------------------------

def chat_completion(cid: str, model: str, choices: list[dict], use: dict, created: int | None = None) -> dict:
    return {"id": cid, "object": "chat.completion", "created": created or int(time.time()),
            "model": model, "system_fingerprint": None, "choices": choices, "usage": use}


def chat_choice(index: int, content: str | None, calls: list[dict], finish: str, logprobs=None) -> dict:
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
        finish = "tool_calls"
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def chat_chunk(cid: str, model: str, created: int, delta: dict, finish: str | None = None,
               logprobs=None, index: int = 0) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def usage_chunk(cid: str, model: str, created: int, use: dict, obj: str = "chat.completion.chunk") -> dict:
    """The last chunk before [DONE] when stream_options.include_usage is set."""
    return {"id": cid, "object": obj, "created": created, "model": model,
            "system_fingerprint": None, "choices": [], "usage": use}


def tool_call_deltas(calls: list[dict]) -> list[dict]:
    return [{"index": i, "id": c["id"], "type": "function",
             "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
            for i, c in enumerate(calls)]


def chat_logprob_entry(piece: bytes, lp: tuple, piece_of) -> dict:
    """One token's entry in choices[].logprobs.content. `piece_of(token)` gives bytes."""
    chosen, top = lp
    return {"token": piece.decode(errors="replace"), "logprob": chosen, "bytes": list(piece),
            "top_logprobs": [{"token": piece_of(t).decode(errors="replace"), "logprob": v,
                              "bytes": list(piece_of(t))} for t, v in top]}


# ---- completions -----------------------------------------------------------------------

def completion(cid: str, model: str, choices: list[dict], use: dict) -> dict:
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None, "choices": choices, "usage": use}


def completion_choice(index: int, text: str, finish: str | None, logprobs=None) -> dict:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def completion_chunk(cid: str, model: str, created: int, index: int, text: str, finish: str | None = None,
                     logprobs=None) -> dict:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": [completion_choice(index, text, finish, logprobs)]}


def completion_logprobs(entries: list[tuple[bytes, tuple]], piece_of, offset: int = 0) -> dict:
    """The legacy completions logprobs object."""
    tokens, lps, tops, offsets = [], [], [], []
    pos = offset
    for piece, (chosen, top) in entries:
        text = piece.decode(errors="replace")
        tokens.append(text)
        lps.append(chosen)
        tops.append({piece_of(t).decode(errors="replace"): v for t, v in top})
        offsets.append(pos)
        pos += len(text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


# ---- embeddings and models ------------------------------------------------------------

def embedding_list(model: str, vectors: np.ndarray, encoding: str, prompt_tokens: int) -> dict:
    """Rows stay numpy arrays: the JSON writer (jsonio) prints float32 values short and exact."""
    data = []
    for i, v in enumerate(vectors):
        if encoding == "base64":
            emb = base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode()
        else:
            emb = np.ascontiguousarray(v)
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def model_entry(model_id: str, created_ms: int | None) -> dict:
    created = int((created_ms or time.time() * 1000) // 1000)
    return {"id": model_id, "object": "model", "created": created, "owned_by": "local"}
