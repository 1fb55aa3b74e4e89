"""Between the API routes and the engines: find the model, build the prompt, start generations.

Every failure a client can cause becomes an InferenceError here, with a message that
says what to change; the routes only shape requests and responses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelyard.server.inference import grammar

from modelyard.server.inference import tool_calls
from modelyard.server.inference.chat_templates import TemplateError, format_chat
from modelyard.server.inference.llama import adapters as lora
from modelyard.server.inference.llama.streams import Generation, Group
from modelyard.server.inference.errors import BadRequest, EngineUnavailable
from modelyard.server.inference.images import ImageError
from modelyard.server.inference.requests import ChatRequest, CompletionRequest, EmbeddingRequest
from modelyard.server.shared import names
from modelyard.server.shared.facts import ADAPTER_KIND, GENERATIVE_KINDS



def fit_tokens(n_prompt: int, max_tokens: int | None, n_ctx: int, why: str = "") -> int:
    """How many tokens may be generated, or a 400 that gives the numbers (and `why` the
    model has this context, when another API's load request chose it)."""
    if n_prompt + (max_tokens or 1) > n_ctx:
        if max_tokens:
            raise BadRequest(
                f"This model's context is {n_ctx} tokens per request, but the prompt has {n_prompt} "
                f"tokens and max_tokens asks for {max_tokens} more ({n_prompt + max_tokens} in all). "
                "Shorten the prompt, lower max_tokens, or raise the model's gguf.initContextSize." + why)
        raise BadRequest(
            f"This model's context is {n_ctx} tokens per request, but the prompt has {n_prompt} "
            "tokens, which leaves no room for an answer. Shorten the prompt or raise the model's "
            "gguf.initContextSize." + why)
    return max_tokens or (n_ctx - n_prompt)


def check_prompt_length(n_chars: int, n_ctx: int, max_piece: int, what: str = "The prompt", why: str = "") -> None:
    """A 400 for a text that cannot fit in `n_ctx` tokens, decided from its length alone: a
    token stands for at most `max_piece` bytes, and a text has at least as many bytes as
    characters. Refusing here spares tokenizing megabytes only to count them."""
    limit = n_ctx * max_piece
    if n_chars > limit:
        raise BadRequest(
            f"{what} is {n_chars} characters long; this model's context of {n_ctx} tokens holds at "
            f"most {limit} (a token of its vocabulary stands for at most {max_piece} bytes). "
            "Shorten it, or raise the model's gguf.initContextSize." + why)


def _text_length(messages: list[dict]) -> int:
    """Characters of text in chat messages (string content and text parts)."""
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return total


@dataclass
class ChatJob:
    loaded: object
    group: Group
    tool_names: frozenset = frozenset()
    parse_tools: bool = False
    forced_tool: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def gens(self) -> list[Generation]:
        return self.group.gens


class Dispatcher:
    def __init__(self, manager, settings):
        self.manager = manager
        self.settings = settings
        self.metrics = manager.metrics

    # ---- models ----------------------------------------------------------------------

    def model(self, model_id: str, kinds: tuple[str, ...]):
        """The loaded model (loading it now when needed), if it is of one of `kinds`.
        `model_id` may be an Ollama name (name:tag). An adapter's id loads its base."""
        loaded = self.manager.get(self._base(names.to_id(model_id))[0])
        if loaded.kind not in kinds:
            raise BadRequest(f"Model '{model_id}' is of kind {loaded.kind}; this endpoint needs a "
                             f"model of kind {' or '.join(kinds)}")
        return loaded

    def generative(self, req) -> tuple[object, tuple]:
        """The loaded model that serves `req` and the adapter set it runs with. An adapter's id
        as `model` is served by its base with the adapter on; `req.lora` adds adapters of that
        base. The base is in memory once, whatever adapters its requests use."""
        store = self.manager.store
        model_id, adapter = self._base(names.to_id(req.model))
        wanted = ([(adapter, 1.0)] if adapter else []) + list(req.lora)
        files = []
        for adapter_id, scale in wanted:
            view = store.get(adapter_id)
            base = (store.meta(adapter_id).get("adapter") or {}).get("base")
            if view["kind"] != ADAPTER_KIND:
                raise BadRequest(f"lora: model '{adapter_id}' is not an adapter")
            if base != model_id:
                raise BadRequest(f"lora: adapter '{adapter_id}' was trained on '{base}', not on '{model_id}'")
            if not view["readyToUse"]:
                raise BadRequest(f"lora: adapter '{adapter_id}' has no complete file yet")
            files.append((str(store.file_path(adapter_id)), scale))
        return self.model(model_id, GENERATIVE_KINDS), lora.normal(files)

    def _base(self, model_id: str) -> tuple[str, str | None]:
        """(the model that is loaded, the adapter on it or None) for a model id."""
        store = self.manager.store
        if store.get(model_id)["kind"] != ADAPTER_KIND:
            return model_id, None
        return store.meta(model_id)["adapter"]["base"], model_id

    def tokenize(self, loaded, text: str, add_special: bool, parse_special: bool = True) -> list[int]:
        """A generative model's tokens of `text`, refused by length first when it cannot fit."""
        check_prompt_length(len(text), loaded.engine.n_ctx_slot, loaded.model.max_piece_bytes,
                            why=self.why_settings(loaded))
        return loaded.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def why_settings(self, loaded) -> str:
        """A sentence for a context error when another API's load request chose the context."""
        serving = self.manager.serving(loaded.id)
        return serving.why() if serving is not None else ""

    @staticmethod
    def prompt_byte_limit(loaded) -> int:
        """The most bytes of text a prompt of this loaded model can have and still fit."""
        return loaded.engine.n_ctx_slot * loaded.model.max_piece_bytes

    # ---- chat ------------------------------------------------------------------------

    def chat(self, req: ChatRequest) -> ChatJob:
        loaded, tokens, media, gbnf, use_tools, forced, adapters = self._chat_prompt(req)
        group = Group()
        self._start(loaded, tokens, req, gbnf, group, media, adapters)
        return ChatJob(loaded, group, frozenset(t["function"]["name"] for t in req.tools or []),
                       parse_tools=use_tools, forced_tool=forced is not None)

    def count_chat_tokens(self, req: ChatRequest) -> int:
        """The prompt's length in tokens, images included, as chat() would submit it."""
        return len(self._chat_prompt(req)[1])

    def _chat_prompt(self, req: ChatRequest):
        """(loaded model, prompt tokens, media, grammar, tools used, forced tool, adapter set) of a
        chat request."""
        loaded, adapters = self.generative(req)
        model = loaded.model
        use_tools = bool(req.tools) and req.tool_choice != "none"
        forced = None
        if use_tools and req.tool_choice == "required":
            forced = ""
        elif use_tools and isinstance(req.tool_choice, dict):
            forced = req.tool_choice["name"]
        n_ctx, max_piece = loaded.engine.n_ctx_slot, model.max_piece_bytes
        why = self.why_settings(loaded)
        check_prompt_length(_text_length(req.messages), n_ctx, max_piece, "The conversation", why)
        try:
            prompt = format_chat(req.messages, hint=(loaded.meta.get("gguf") or {}).get("chatTemplateHint"),
                                 gguf_template=model.chat_template,
                                 bos_token=model.token_text(model.bos), eos_token=model.token_text(model.eos),
                                 tools=req.tools if use_tools else None)
        except TemplateError as exc:
            raise BadRequest(str(exc)) from None
        check_prompt_length(len(prompt.text), n_ctx, max_piece, why=why)
        try:
            if forced is not None:
                gbnf = grammar.for_tool_call(req.tools, forced or None)
            else:
                gbnf = grammar.for_response_format(req.response_format)
        except grammar.SchemaError as exc:
            raise BadRequest(str(exc)) from None
        if req.images:
            if loaded.kind != "vlm":
                raise BadRequest(f"Model '{req.model}' is of kind {loaded.kind} and takes no images; "
                                  "use a vlm model with its mmproj")
            if loaded.projector is None:
                raise BadRequest(f"Model '{req.model}' has no projector loaded; send text content only")
            try:
                mm = loaded.projector.prompt(prompt.text, prompt.add_special, req.images)
            except ImageError as exc:
                raise BadRequest(str(exc)) from None
            tokens, media = mm.tokens, mm.media
        else:
            tokens = model.tokenize(prompt.text, add_special=prompt.add_special, parse_special=True)
            media = ()
        return loaded, tokens, media, gbnf, use_tools, forced, adapters

    # ---- completions -----------------------------------------------------------------

    def completion(self, req: CompletionRequest):
        loaded, adapters = self.generative(req)
        model = loaded.model
        group, prompts = Group(), []
        try:
            for p in req.prompts:
                if isinstance(p, str):
                    tokens = self.tokenize(loaded, p, add_special=True)
                    text = p
                else:
                    bad = [t for t in p if not 0 <= t < model.n_vocab]
                    if bad:
                        raise BadRequest(f"token id {bad[0]} is outside the vocabulary (0..{model.n_vocab - 1})")
                    tokens, text = list(p), model.detokenize(p)
                self._start(loaded, tokens, req, None, group, adapters=adapters)
                prompts += [text] * req.n
        except Exception:
            group.close()
            raise
        return loaded, group, prompts

    # ---- shared ----------------------------------------------------------------------

    def _start(self, loaded, tokens: list[int], req, gbnf: str | None, group: Group,
               media: tuple = (), adapters: tuple = ()) -> None:
        """Start req.n generations of `tokens` in `group`; the caller closes it on failure."""
        from dataclasses import replace

        from modelyard.server.inference.llama.scheduler import GenRequest
        from modelyard.server.inference.llama.sampling import GrammarError, check_grammar

        engine = loaded.engine
        if not tokens:
            raise BadRequest("The prompt is empty")
        wanted = req.max_tokens
        if req.fit_max_tokens and wanted and len(tokens) + wanted > engine.n_ctx_slot:
            wanted = None  # as much as the context leaves
        max_tokens = fit_tokens(len(tokens), wanted, engine.n_ctx_slot, self.why_settings(loaded))
        params = req.sampling
        if gbnf:
            try:
                check_grammar(engine.model.vocab, gbnf)
            except GrammarError as exc:
                raise BadRequest(f"response_format: {exc}") from None
            params = replace(params, grammar=gbnf)
        try:
            for i in range(req.n):
                p = params if i == 0 or params.seed is None else replace(params, seed=params.seed + i)
                group.start(engine, GenRequest(tokens, p, max_tokens, req.logprobs, media=media,
                                               priority=req.priority, adapters=adapters), req.stop)
        except EngineUnavailable:
            group.close()
            raise

    def record(self, model_id: str, gen: Generation) -> None:
        self.metrics.record_generation(model_id, gen)

    # ---- embeddings ------------------------------------------------------------------

    def embed(self, req: EmbeddingRequest) -> tuple[np.ndarray, int]:
        loaded = self.model(req.model, ("embed",))
        engine = loaded.engine
        batch = []
        for i, x in enumerate(req.inputs):
            if isinstance(x, str):
                check_prompt_length(len(x), engine.max_input, loaded.model.max_piece_bytes, f"input[{i}]")
            tokens = engine.tokenize(x) if isinstance(x, str) else list(x)
            if len(tokens) > engine.max_input:
                raise BadRequest(f"input[{i}] has {len(tokens)} tokens; this model takes at most "
                                  f"{engine.max_input}")
            if not isinstance(x, str) and any(not 0 <= t < engine.model.n_vocab for t in tokens):
                raise BadRequest(f"input[{i}] has a token id outside the vocabulary")
            batch.append(tokens)
        vectors = engine.embed(batch)
        if req.dimensions and req.dimensions < vectors.shape[1]:
            vectors = vectors[:, :req.dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        n_tokens = sum(len(t) for t in batch)
        self.metrics.record_embedding(loaded.id, len(batch), n_tokens)
        return vectors, n_tokens

    @staticmethod
    def tool_parse(job: ChatJob, text: str) -> tuple[str | None, list[dict]]:
        if not job.parse_tools:
            return text, []
        return tool_calls.parse(text, job.tool_names)
