"""Validation of OpenAI request bodies: JSON in, typed requests out, or a message for a 400.

Pure functions; nothing here touches a model.
"""
from __future__ import annotations

import base64
import binascii
from modelyard.server.inference.llama.sampling import SamplingParams
from modelyard.server.inference.requests import (IMAGE_MARKER, ChatRequest, CompletionRequest,
                                                  EmbeddingRequest, ImagePart)

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOPS = 16
MAX_TOP_LOGPROBS = 20


class RequestError(ValueError):
    """The request is wrong; the message says how."""


def _num(body, key, lo, hi, default, kind=float):
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
        raise RequestError(f"'{key}' must be {'an integer' if kind is int else 'a number'}")
    if not lo <= v <= hi:
        raise RequestError(f"'{key}' must be between {lo} and {hi}, got {v}")
    return kind(v)


def _model(body) -> str:
    m = body.get("model")
    if not isinstance(m, str) or not m:
        raise RequestError("'model' is required: the id of a model in the registry")
    return m


def _generate_fields(body: dict) -> dict:
    bias = body.get("logit_bias") or {}
    if not isinstance(bias, dict):
        raise RequestError("'logit_bias' must map token ids to numbers")
    try:
        logit_bias = {int(k): float(v) for k, v in bias.items()}
    except (TypeError, ValueError):
        raise RequestError("'logit_bias' must map token ids to numbers") from None
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError("'seed' must be an integer")
    sampling = SamplingParams(
        temperature=_num(body, "temperature", 0, 2, 1.0),
        top_p=_num(body, "top_p", 0, 1, 1.0),
        top_k=_num(body, "top_k", 0, 1 << 20, 0, int),
        min_p=_num(body, "min_p", 0, 1, 0.0),
        seed=seed,
        repeat_penalty=_num(body, "repeat_penalty", 0, 10, 1.0),
        presence_penalty=_num(body, "presence_penalty", -2, 2, 0.0),
        frequency_penalty=_num(body, "frequency_penalty", -2, 2, 0.0),
        logit_bias=logit_bias,
    )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError("'max_tokens' must be a positive integer")
    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOPS:
        stops = [s for s in stop if s]
    else:
        raise RequestError(f"'stop' must be a string or a list of up to {MAX_STOPS} strings")
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise RequestError("'stream_options' must be an object")
    n = _num(body, "n", 1, 16, 1, int)
    return dict(model=_model(body), sampling=sampling, max_tokens=max_tokens, stop=stops,
                stream=stream, include_usage=bool(opts.get("include_usage", False)), n=n,
                logprobs=None)


def parse_chat(body: dict) -> ChatRequest:
    fields = _generate_fields(body)
    if body.get("logprobs"):
        fields["logprobs"] = _num(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0, int)
    elif body.get("top_logprobs") is not None:
        raise RequestError("'top_logprobs' needs 'logprobs': true")
    messages, images = _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    rf = body.get("response_format")
    if rf is not None and not isinstance(rf, dict):
        raise RequestError("'response_format' must be an object")
    return ChatRequest(**fields, messages=messages, images=images, tools=tools,
                       tool_choice=tool_choice, response_format=rf)


def parse_completion(body: dict) -> CompletionRequest:
    fields = _generate_fields(body)
    lp = body.get("logprobs")
    if lp is not None and lp is not False:
        fields["logprobs"] = _num(body, "logprobs", 0, MAX_TOP_LOGPROBS, 0, int)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(
            isinstance(p, str) or (isinstance(p, list) and all(isinstance(t, int) for t in p)) for p in prompt):
        prompts = list(prompt)
    else:
        raise RequestError("'prompt' must be a string, a list of strings, or token arrays")
    if len(prompts) * fields["n"] > 16:
        raise RequestError("at most 16 completions per request (prompts times n)")
    return CompletionRequest(**fields, prompts=prompts, echo=bool(body.get("echo", False)))


def parse_embeddings(body: dict, max_inputs: int = 2048) -> EmbeddingRequest:
    model = _model(body)
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(
            isinstance(x, str) or (isinstance(x, list) and x and all(isinstance(t, int) for t in x)) for x in raw):
        inputs = list(raw)
    else:
        raise RequestError("'input' must be a string, a list of strings, or token arrays (not empty)")
    if len(inputs) > max_inputs:
        raise RequestError(f"'input' has {len(inputs)} items; the limit is {max_inputs}")
    if any(isinstance(x, str) and not x for x in inputs):
        raise RequestError("'input' must not contain empty strings")
    fmt = body.get("encoding_format", "float") or "float"
    if fmt not in ("float", "base64"):
        raise RequestError("'encoding_format' must be float or base64")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise RequestError("'dimensions' must be a positive integer")
    return EmbeddingRequest(model=model, inputs=inputs, encoding_format=fmt, dimensions=dims)


def _messages(raw) -> tuple[list[dict], list[bytes]]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty list")
    out, images = [], []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(f"messages[{i}] needs a role: one of {', '.join(ROLES)}")
        role = "system" if m["role"] == "developer" else m["role"]
        content, imgs = _content(m.get("content"), i)
        images += imgs
        msg = {"role": role, "content": content}
        if role == "assistant" and m.get("tool_calls"):
            if not isinstance(m["tool_calls"], list):
                raise RequestError(f"messages[{i}].tool_calls must be a list")
            msg["tool_calls"] = m["tool_calls"]
        elif content is None:
            raise RequestError(f"messages[{i}] has no content")
        if role == "tool":
            msg["tool_call_id"] = m.get("tool_call_id")
        if m.get("name"):
            msg["name"] = m["name"]
        out.append(msg)
    return out, images


def _content(c, i) -> tuple[str | None, list[ImagePart]]:
    if c is None or isinstance(c, str):
        return c, []
    if not isinstance(c, list):
        raise RequestError(f"messages[{i}].content must be a string or a list of parts")
    texts, images = [], []
    for j, part in enumerate(c):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            where = f"messages[{i}].content[{j}]"
            images.append(ImagePart(decode_data_uri(url, where), where))
            texts.append(IMAGE_MARKER)
        else:
            raise RequestError(f"messages[{i}].content has a part of unknown type {kind!r}")
    return "".join(texts) if len(texts) != 1 else texts[0], images


def decode_data_uri(url, where: str) -> bytes:
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        raise RequestError(f"{where}: images must be data URIs (data:image/png;base64,...); "
                           "this server does not fetch URLs")
    header, data = url.split(",", 1)
    if not header.endswith(";base64"):
        raise RequestError(f"{where}: image data URIs must be base64")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}: the image's base64 does not decode") from None


def _tools(raw) -> list[dict] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise RequestError("'tools' must be a list")
    for i, t in enumerate(raw):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str):
            raise RequestError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise RequestError(f"tools[{i}].function.parameters must be a JSON schema object")
    return raw or None


def _tool_choice(raw, tools):
    if raw is None:
        return "auto" if tools else "none"
    if raw in ("none", "auto", "required"):
        if raw == "required" and not tools:
            raise RequestError("tool_choice 'required' needs 'tools'")
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict):
        name = raw["function"].get("name")
        if not tools or name not in {t["function"]["name"] for t in tools}:
            raise RequestError(f"tool_choice names function {name!r}, which is not in 'tools'")
        return {"name": name}
    raise RequestError("'tool_choice' must be none, auto, required or {\"type\": \"function\", ...}")
