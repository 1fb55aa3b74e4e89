"""Sampling parameters, and the llama.cpp sampler chain that applies them natively.

Every per-token step (penalties, logit bias, grammar, top-k/p, min-p, temperature, the
draw) runs inside llama.cpp; Python never touches the vocabulary-sized logits unless
the client asked for logprobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The window the repeat/presence/frequency penalties look back over (llama.cpp's default).
PENALTY_LAST_N = 64


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None  # GBNF, root rule "root"

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class GrammarError(ValueError):
    pass


def build_chain(vocab, n_vocab: int, p: SamplingParams):
    """A new sampler chain for one request. The caller frees it with llama_sampler_free."""
    import llama_cpp as L

    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = lambda s: L.llama_sampler_chain_add(chain, s)  # noqa: E731
    if p.logit_bias:
        arr = (L.llama_logit_bias * len(p.logit_bias))()
        for i, (tok, bias) in enumerate(p.logit_bias.items()):
            arr[i].token = tok
            arr[i].bias = bias
        add(L.llama_sampler_init_logit_bias(n_vocab, len(p.logit_bias), arr))
    if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
        add(L.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, p.repeat_penalty,
                                           p.frequency_penalty, p.presence_penalty))
    if p.grammar:
        g = L.llama_sampler_init_grammar(vocab, p.grammar.encode(), b"root")
        if not g:
            L.llama_sampler_free(chain)
            raise GrammarError("the grammar could not be parsed")
        add(g)
    if p.greedy:
        add(L.llama_sampler_init_greedy())
        return chain
    if p.top_k > 0:
        add(L.llama_sampler_init_top_k(p.top_k))
    if p.top_p < 1.0:
        add(L.llama_sampler_init_top_p(p.top_p, 1))
    if p.min_p > 0.0:
        add(L.llama_sampler_init_min_p(p.min_p, 1))
    add(L.llama_sampler_init_temp(p.temperature))
    seed = L.LLAMA_DEFAULT_SEED if p.seed is None else p.seed & 0xFFFFFFFF
    add(L.llama_sampler_init_dist(seed))
    return chain


def check_grammar(vocab, grammar: str) -> None:
    """Parse a grammar once in the request thread, so a bad one is a 400, not a dead slot."""
    import llama_cpp as L

    g = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not g:
        raise GrammarError("the grammar could not be parsed")
    L.llama_sampler_free(g)

