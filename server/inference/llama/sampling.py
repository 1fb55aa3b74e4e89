"""Sampling parameters, and the samplers that apply them to a decode's logits.

Every per-token step (penalties, logit bias, grammar, top-k/p, min-p, temperature, the
draw) runs natively, in llama.cpp's sampler chain. Plain greedy decoding (no grammar, no
penalties) is the one exception: it is an argmax, done with numpy on llama.cpp's logits,
because llama_sampler_sample copies the whole vocabulary into a new candidate array for
every token (0.1-0.2 ms at 49k tokens, on the path between two decodes; numpy's argmax
takes 0.02 ms). It picks what llama.cpp's greedy sampler picks: the first highest logit,
after the same float32 bias.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that needs the sampler chain's state (grammar, penalties)."""
        return (self.greedy and not self.grammar and self.repeat_penalty == 1.0
                and not self.presence_penalty and not self.frequency_penalty)


class GrammarError(ValueError):
    pass


class ChainSampler:
    """A llama.cpp sampler chain: samples (and accepts) a token from a row of logits."""

    def __init__(self, chain):
        self.chain = chain

    def sample(self, ctx, row: int) -> int:
        import llama_cpp as L

        return L.llama_sampler_sample(self.chain, ctx, row)

    def free(self) -> None:
        import llama_cpp as L

        if self.chain:
            L.llama_sampler_free(self.chain)
            self.chain = None


class GreedySampler:
    """Plain greedy decoding: the argmax of the row's logits, with the logit bias added."""

    def __init__(self, n_vocab: int, logit_bias: dict[int, float]):
        self.n_vocab = n_vocab
        # Token ids outside the vocabulary are ignored, as llama.cpp's logit-bias sampler
        # ignores them (a client may send another model's ids).
        bias = {t: b for t, b in logit_bias.items() if 0 <= t < n_vocab}
        self.bias_tokens = np.fromiter(bias, np.int64, len(bias))
        self.bias = np.fromiter(bias.values(), np.float32, len(bias))

    def sample(self, ctx, row: int) -> int:
        import llama_cpp as L

        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, row), shape=(self.n_vocab,))
        if self.bias_tokens.size:
            logits = logits.copy()  # llama.cpp's logits stay as they are (logprobs read them)
            logits[self.bias_tokens] += self.bias
        return int(logits.argmax())

    def free(self) -> None:
        pass


def build_sampler(vocab, n_vocab: int, p: SamplingParams):
    """A new sampler for one request (GreedySampler or ChainSampler); the caller frees it."""
    if p.plain_greedy:
        return GreedySampler(n_vocab, p.logit_bias)
    return ChainSampler(build_chain(vocab, n_vocab, p))


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

