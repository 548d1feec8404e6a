"""Picking the next token from logits: greedy, temperature, top-k, nucleus, penalties.

Shared by every family that generates token by token (the Transformer, the RNN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SampledToken:
    id: int
    logprob: float


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor,
                             penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): make tokens already in the text less likely."""
    logits = logits.clone()
    prior = logits[seen]
    logits[seen] = torch.where(prior > 0, prior / penalty, prior * penalty)
    return logits


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    allowed: torch.Tensor | None = None,
) -> SampledToken:
    """Pick one token from ``logits`` (vocab,) by temperature, top-k and nucleus sampling.

    ``allowed`` (a boolean mask over the vocabulary) rules tokens out first: a grammar,
    such as a duration always following a pitch in a melody.
    """
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if temperature == 0.0:
        logprobs = F.log_softmax(logits, dim=-1)
        token = int(torch.argmax(logits))
        return SampledToken(token, float(logprobs[token]))
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2019): keep the smallest set of tokens whose
        # probability mass reaches top_p.
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        drop = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p  # mass before each
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    logprobs = F.log_softmax(logits, dim=-1)
    token = int(torch.multinomial(logprobs.exp(), 1, generator=generator))
    return SampledToken(token, float(logprobs[token]))
