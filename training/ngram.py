"""An interpolated n-gram language model: the baseline a sequence model must beat.

Maximum-likelihood unigram, bigram and trigram estimates from the training tokens, mixed
with a uniform floor (Jelinek & Mercer 1980) so no held-out token has zero probability.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise

#: Weights of the trigram, bigram, unigram and uniform estimates.
LAMBDAS = (0.5, 0.3, 0.15, 0.05)


def ngram_perplexity(train: Iterable[int], held_out: Iterable[int], vocab_size: int) -> float:
    train = [int(t) for t in train]  # plain ints hash far faster than numpy scalars
    held_out = [int(t) for t in held_out]
    uni = Counter(train)
    bi = Counter(pairwise(train))
    tri = Counter(zip(train, train[1:], train[2:], strict=False))
    bi_context = Counter(train[:-1])
    tri_context = Counter(pairwise(train[:-1]))
    total = len(train)
    l3, l2, l1, l0 = LAMBDAS
    nll = 0.0
    for a, b, c in zip(held_out, held_out[1:], held_out[2:], strict=False):
        p = l0 / vocab_size + l1 * uni[c] / total
        if bi_context[b]:
            p += l2 * bi[(b, c)] / bi_context[b]
        if tri_context[(a, b)]:
            p += l3 * tri[(a, b, c)] / tri_context[(a, b)]
        nll -= math.log(p)
    return math.exp(nll / max(1, len(held_out) - 2))
