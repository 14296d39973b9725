"""llama.cpp sampler chains for the batched engine: one per sequence, built like
``Llama.generate``'s, so that the settings mean what they mean on the single-sequence engine.

Each ``llama_sampler_sample`` call copies the 262,144 logits of a row into a candidate array
and runs the chain over it: ~0.8-1.5 ms a row on the 2-core host of ``docs/profile.md``
(``bench/decode_ceiling.py``), ~8% of a 4-sequence step. Two rows sampled on two threads at
once took 0.85-1.1x the time of one after the other there (the decode's second OpenMP thread
spins on the other core right after a step), ~1% of a step at best, so the engine samples its
rows one after the other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PENALTY_LAST_N", "sampler_chain"]

PENALTY_LAST_N = 64  # as Llama's last_n_tokens_size default


def sampler_chain(n_vocab: int, temperature: float, top_k: int, top_p: float,
                  repeat_penalty: float, frequency_penalty: float, presence_penalty: float,
                  seed: int) -> Any:
    """The chain ``Llama.generate`` builds for these settings (min_p 0, typical_p 1), which
    samples the same tokens for the same seed.

    One difference, that changes no result: when penalties apply and can only lower logits
    (``repeat_penalty`` >= 1, the other two >= 0) and a top-k (or greedy) step follows, a top-k
    of ``top_k + PENALTY_LAST_N`` goes first. The penalties sampler looks every candidate up
    in its history (262,144 lookups, ~2 ms a token); penalties change at most
    ``PENALTY_LAST_N`` tokens and only lower them, so the k best after them are among the
    ``k + PENALTY_LAST_N`` best before (up to ties at the boundary).
    """
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    penalised = (repeat_penalty, frequency_penalty, presence_penalty) != (1.0, 0.0, 0.0)
    lowers = repeat_penalty >= 1.0 and frequency_penalty >= 0.0 and presence_penalty >= 0.0
    keep = 1 if temperature == 0.0 else top_k if temperature > 0.0 else 0
    if penalised and lowers and keep > 0:
        add(chain, llama_cpp.llama_sampler_init_top_k(keep + PENALTY_LAST_N))
    add(chain, llama_cpp.llama_sampler_init_penalties(
        n_vocab, PENALTY_LAST_N, repeat_penalty, frequency_penalty, presence_penalty))
    if temperature < 0.0:
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
    elif temperature == 0.0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
    else:
        add(chain, llama_cpp.llama_sampler_init_top_k(top_k))
        add(chain, llama_cpp.llama_sampler_init_typical(1.0, 1))
        add(chain, llama_cpp.llama_sampler_init_top_p(top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_min_p(0.0, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain
