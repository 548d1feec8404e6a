"""Picking the next token from logits: greedy, temperature, top-k, nucleus, typical
decoding, penalties and the watermark.

Shared by every family that generates token by token (the Transformer, the RNN).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SampledToken:
    id: int
    logprob: float
    #: the likeliest tokens of the distribution it was drawn from, as (id, logprob), when
    #: the rule asked for them (Rule.top_n)
    top: tuple[tuple[int, float], ...] = ()


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor,
                             penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): make tokens already in the text less likely."""
    logits = logits.clone()
    prior = logits[seen]
    logits[seen] = torch.where(prior > 0, prior / penalty, prior * penalty)
    return logits


def apply_frequency_penalty(logits: torch.Tensor, seen: torch.Tensor,
                            penalty: float) -> torch.Tensor:
    """OpenAI's frequency penalty, as text-generation-inference computes it: subtract
    ``penalty`` times each token's share of the text so far (prompt included)."""
    counts = torch.bincount(seen, minlength=logits.shape[-1])[: logits.shape[-1]]
    return logits - penalty * counts.to(logits.dtype) / max(1, seen.numel())


def apply_presence_penalty(logits: torch.Tensor, seen: torch.Tensor,
                           penalty: float) -> torch.Tensor:
    """OpenAI's presence penalty: subtract ``penalty`` from every token already present."""
    present = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    present[seen[seen < logits.shape[-1]]] = True
    return logits - penalty * present.to(logits.dtype)


#: The watermark's green share of the vocabulary and its logit bias (the paper's
#: gamma and delta; text-generation-inference's defaults), and the prime its hash uses.
WATERMARK_GAMMA, WATERMARK_DELTA, WATERMARK_KEY = 0.5, 2.0, 15485863


def green_list(previous: int, vocab_size: int, device: torch.device | str = "cpu"
               ) -> torch.Tensor:
    """The watermark's green tokens after ``previous`` (Kirchenbauer et al. 2023, "A
    Watermark for Large Language Models"): a permutation of the vocabulary seeded by a
    hash of the previous token, cut at gamma. Anyone with the vocabulary can recompute it."""
    generator = torch.Generator(device="cpu").manual_seed(WATERMARK_KEY * previous)
    order = torch.randperm(vocab_size, generator=generator)
    return order[: int(vocab_size * WATERMARK_GAMMA)].to(device)


def apply_watermark(logits: torch.Tensor, previous: int) -> torch.Tensor:
    """Add delta to the green tokens' logits: the text leans green, which a detector
    counts (`green_share`), while no single token is forced."""
    logits = logits.clone()
    logits[green_list(previous, logits.shape[-1], logits.device)] += WATERMARK_DELTA
    return logits


def green_share(tokens: list[int], vocab_size: int) -> float:
    """The share of ``tokens`` (after the first) in the green list of the token before
    them: about gamma for ordinary text, well above it for watermarked text."""
    if len(tokens) < 2:
        return 0.0
    greens = sum(int(t in set(green_list(p, vocab_size).tolist()))
                 for p, t in pairwise(tokens))
    return greens / (len(tokens) - 1)


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
    such as a duration always following a pitch in a melody. The same arithmetic as
    `sample_rows`, so one sequence picks the same token alone or in a batch.
    """
    return sample_rows(logits[None], [Rule(temperature, top_k, top_p, generator)],
                       allowed=None if allowed is None else allowed[None])[0]


@dataclass(frozen=True)
class Rule:
    """How one row picks its token: temperature 0 is greedy."""

    temperature: float
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None
    typical_p: float | None = None
    top_n: int = 0  # alternatives to report with the token


def sample_rows(logits: torch.Tensor, rules: list[Rule],
                allowed: torch.Tensor | None = None) -> list[SampledToken]:
    """One token per row of ``logits`` (B, vocab), row i by ``rules[i]``, in a few batched
    operations rather than a loop of them.

    Each row is computed on its own (per-row softmax, top-k, sort and cumulative sum), and
    a sampled row draws exactly one uniform number from its own generator: inverse-CDF
    sampling. So a seeded sequence's tokens do not depend on what else is in the batch.
    """
    B, V = logits.shape
    assert len(rules) == B, "one rule per row"
    logits, device = logits.float(), logits.device

    def column(values: list[Any]) -> torch.Tensor:  # (B, 1) on the logits' device
        return torch.tensor(values, device=device)[:, None]

    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    greedy = [r.temperature == 0.0 for r in rules]
    ids = logits.argmax(dim=-1)  # (B,) the greedy rows' answer
    logprobs = F.log_softmax(logits, dim=-1)
    if not all(greedy):
        scaled = logits / column([r.temperature or 1.0 for r in rules])
        ks = [r.top_k if r.top_k is not None and 0 < r.top_k < V else V for r in rules]
        if min(ks) < V:
            # Keep each row's k largest: its k-th largest value is its threshold.
            limited = column([k < V for k in ks])
            top = torch.topk(scaled, max(k for k in ks if k < V), dim=-1).values
            kth = top.gather(1, column([min(k, top.shape[1]) - 1 for k in ks]))
            scaled = scaled.masked_fill(limited & (scaled < kth), float("-inf"))
        ps = [r.top_p if r.top_p is not None and r.top_p < 1.0 else 1.0 for r in rules]
        if min(ps) < 1.0:
            # Nucleus sampling (Holtzman et al. 2019): keep the smallest set of tokens
            # whose probability mass reaches top_p.
            limited = column([p < 1.0 for p in ps])
            ordered, order = torch.sort(scaled, dim=-1, descending=True)
            probs = F.softmax(ordered, dim=-1)
            before = torch.cumsum(probs, dim=-1) - probs  # mass ahead of each token
            drop = limited & (before >= column(ps))
            scaled = scaled.scatter(1, order, ordered.masked_fill(drop, float("-inf")))
        ts = [r.typical_p if r.typical_p is not None and r.typical_p < 1.0 else 1.0
              for r in rules]
        if min(ts) < 1.0:
            # Typical decoding (Meister et al. 2022): rank tokens by how far their surprise
            # is from the distribution's entropy; keep the closest up to typical_p mass.
            limited = column([t < 1.0 for t in ts])
            logp = F.log_softmax(scaled, dim=-1)
            p = logp.exp()
            entropy = -(p * logp.nan_to_num(neginf=0.0)).sum(dim=-1, keepdim=True)
            distance = (-logp - entropy).abs()  # inf for tokens already ruled out
            ordered, order = torch.sort(distance, dim=-1)
            mass = p.gather(1, order)
            before = torch.cumsum(mass, dim=-1) - mass
            drop = limited & (before >= column(ts))
            scaled = scaled.masked_fill(torch.zeros_like(drop).scatter(1, order, drop),
                                        float("-inf"))
        sampled_logprobs = F.log_softmax(scaled, dim=-1)
        probs = sampled_logprobs.exp()
        cdf = torch.cumsum(probs, dim=-1)  # (B, V)
        u = torch.cat([torch.zeros(1, device=device) if g else  # (B,) one draw per row
                       torch.rand(1, generator=r.generator, device=r.generator.device
                                  if r.generator is not None else device).to(device)
                       for r, g in zip(rules, greedy, strict=True)])
        drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
        drawn = drawn.clamp(max=V - 1)
        # A draw rounded past the last possible token takes the likeliest one instead.
        drawn = torch.where(probs.gather(1, drawn[:, None])[:, 0] > 0, drawn,
                            probs.argmax(dim=-1))
        sampled = ~column(greedy)
        ids = torch.where(sampled[:, 0], drawn, ids)
        logprobs = torch.where(sampled, sampled_logprobs, logprobs)
    chosen = logprobs.gather(1, ids[:, None])[:, 0]
    n = max(r.top_n for r in rules)
    if n == 0:
        return [SampledToken(i, lp) for i, lp in zip(ids.tolist(), chosen.tolist(),
                                                     strict=True)]
    # The likeliest alternatives, from the distribution each row was drawn from.
    best = torch.topk(logprobs, min(n, V), dim=-1)
    values, indices = best.values.tolist(), best.indices.tolist()
    return [SampledToken(i, lp, tuple(zip(indices[b][: r.top_n], values[b][: r.top_n],
                                          strict=True)))
            for b, (i, lp, r) in enumerate(zip(ids.tolist(), chosen.tolist(), rules,
                                               strict=True))]
