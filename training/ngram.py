"""Interpolated n-gram language models: the baselines a sequence model must beat.

Maximum-likelihood estimates of every order up to ``order`` from the training tokens,
mixed with a uniform floor (Jelinek & Mercer 1980) so no held-out token has zero
probability; a context never seen in training gives its weight to the other estimates.
The trigram keeps fixed weights; the strongest baseline, `tuned`, fits its mixture
weights by EM on a tenth of the training tokens held back from the counts (deleted
interpolation), then counts all of them.

`nll` gives each held-out target's negative log-probability, so a baseline is scored on
exactly the targets the model is (training.data.tokens.held_out_plan).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

#: A token stream: a list of ids or an integer array.
Tokens = Sequence[int] | np.ndarray

#: The trigram's weights: trigram, bigram, unigram, uniform.
TRIGRAM_LAMBDAS = (0.5, 0.3, 0.15, 0.05)
#: Order of the tuned baseline, and the share of training tokens its weights are fit on.
TUNED_ORDER, TUNING_SHARE = 4, 0.1


class InterpolatedNgram:
    """p(t | context) = Σ_k λ_k · count(context_k, t) / count(context_k) + λ_0 / V, over
    the orders k whose context was seen, renormalised over them."""

    def __init__(self, train: Tokens, vocab_size: int, lambdas: Sequence[float]
                 ) -> None:
        """``lambdas``: the weights of orders n, n-1, ..., 1 and of the uniform floor."""
        self.order, self.vocab_size = len(lambdas) - 1, vocab_size
        self.lambdas = np.asarray(lambdas, dtype=np.float64)
        tokens = [int(t) for t in train]  # plain ints hash far faster than numpy scalars
        self.total = len(tokens)
        # counts[k]: (k-1 tokens of context, token) -> count; contexts[k]: context -> count
        self.counts: list[Counter[tuple[int, ...]]] = [Counter() for _ in range(self.order + 1)]
        self.contexts: list[Counter[tuple[int, ...]]] = [Counter() for _ in range(self.order + 1)]
        for k in range(1, self.order + 1):
            grams = zip(*(tokens[j:] for j in range(k)), strict=False)
            self.counts[k].update(grams)
            self.contexts[k].update(zip(*(tokens[j:len(tokens) - 1] for j in range(k - 1)),
                                        strict=False))

    def estimates(self, tokens: Tokens) -> np.ndarray:
        """(len(tokens) - 1, order + 1): for each target i ≥ 1, the uniform floor then each
        order's estimate, NaN where its context is unseen (or runs off the start)."""
        tokens = [int(t) for t in tokens]
        out = np.full((max(0, len(tokens) - 1), self.order + 1), np.nan)
        out[:, 0] = 1.0 / self.vocab_size
        for i in range(1, len(tokens)):
            target = tokens[i]
            out[i - 1, 1] = self.counts[1][(target,)] / self.total
            for k in range(2, min(self.order, i + 1) + 1):
                context = tuple(tokens[i - k + 1:i])
                seen = self.contexts[k][context]
                if not seen:
                    break  # a longer context holding this one is unseen too
                out[i - 1, k] = self.counts[k][(*context, target)] / seen
        return out

    def mix(self, estimates: np.ndarray) -> np.ndarray:
        """Probabilities of the targets from `estimates`."""
        weights = np.concatenate([self.lambdas[-1:], self.lambdas[-2::-1]])  # floor, 1..n
        seen = ~np.isnan(estimates)
        return (np.where(seen, estimates, 0.0) @ weights) / (seen @ weights)

    def nll(self, tokens: Tokens) -> np.ndarray:
        """Negative log-probability (nats) of each of ``tokens[1:]`` after the ones before."""
        return -np.log(self.mix(self.estimates(tokens)))


def trigram(train: Tokens, vocab_size: int) -> InterpolatedNgram:
    return InterpolatedNgram(train, vocab_size, TRIGRAM_LAMBDAS)


def tuned(train: Tokens, vocab_size: int, order: int = TUNED_ORDER,
          iterations: int = 30) -> InterpolatedNgram:
    """An interpolated ``order``-gram whose weights maximise the likelihood of the last
    `TUNING_SHARE` of ``train`` under counts of the rest (EM), counted on all of it."""
    cut = int(len(train) * (1 - TUNING_SHARE))
    if cut < order or len(train) - cut < 2:
        return InterpolatedNgram(train, vocab_size, [1.0] * (order + 1))
    start = InterpolatedNgram(train[:cut], vocab_size, [1.0] * (order + 1))
    estimates = start.estimates(train[cut:])  # (T, floor + orders 1..n)
    p = np.nan_to_num(estimates, nan=0.0)
    w = np.full(order + 1, 1.0 / (order + 1))
    for _ in range(iterations):
        share = p * w  # each estimate's part in each target's probability
        w = (share / share.sum(1, keepdims=True)).mean(0) + 1e-6
        w /= w.sum()
    # Back to the constructor's order: n, n-1, ..., 1, then the floor.
    return InterpolatedNgram(train, vocab_size, [*w[:0:-1], w[0]])


def perplexity(nll: np.ndarray) -> float:
    return math.exp(float(np.mean(nll))) if len(nll) else float("nan")
