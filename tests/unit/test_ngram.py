"""The n-gram baselines, checked against hand computations on tiny streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import ngram
from training.data.tokens import held_out_batches, scored_targets


def test_trigram_probability_matches_a_hand_computation():
    train = [0, 1, 2, 0, 1, 2, 0, 1]
    model = ngram.trigram(train, vocab_size=4)
    # Contexts count only positions with a token after them.
    tri = 2 / 2  # (0, 1) is a context twice, followed by 2 both times
    bi = 2 / 2  # 1 is a context twice (the last 1 ends the stream), followed by 2
    uni = 2 / 8
    l3, l2, l1, l0 = ngram.TRIGRAM_LAMBDAS
    expected = l3 * tri + l2 * bi + l1 * uni + l0 / 4
    nll = model.nll([0, 1, 2])
    assert nll[1] == pytest.approx(-math.log(expected))


def test_an_unseen_context_gives_its_weight_to_the_other_estimates():
    model = ngram.trigram([0, 1, 2, 0, 1, 2], vocab_size=4)
    # (2, 2) never occurs, so the trigram term drops out and the rest is renormalised.
    _, l2, l1, l0 = ngram.TRIGRAM_LAMBDAS
    bi = 0 / 1  # 2 precedes a token once (then 0), never 1
    expected = (l2 * bi + l1 * 2 / 6 + l0 / 4) / (l2 + l1 + l0)
    assert model.nll([2, 2, 1])[1] == pytest.approx(-math.log(expected))


@pytest.mark.parametrize("fit", [ngram.trigram, ngram.tuned])
def test_every_context_gives_a_distribution_that_sums_to_one(fit):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 5, size=400).tolist()
    model = fit(train, 5)
    for context in ([0, 1, 2], [4, 4, 4], [3], []):
        total = sum(math.exp(-model.nll([*context, t])[-1]) for t in range(5)) \
            if context else 1.0
        assert total == pytest.approx(1.0)


def test_the_tuned_four_gram_learns_to_trust_the_longer_context():
    # Each token is fixed by the three before it (a de Bruijn-like cycle), not by two.
    rng = np.random.default_rng(1)
    cycle = rng.integers(0, 3, size=50).tolist()
    train, held = cycle * 40, cycle * 4
    tri, four = ngram.trigram(train, 3), ngram.tuned(train, 3)
    assert four.lambdas[0] > 0.5  # the 4-gram's weight
    assert ngram.perplexity(four.nll(held)) < ngram.perplexity(tri.nll(held))


def test_the_baseline_scores_exactly_the_targets_the_model_does():
    tokens = np.random.default_rng(0).integers(0, 7, size=501)
    log_probs = torch.log_softmax(torch.arange(7, dtype=torch.float32), dim=0)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = log_probs.expand(*x.shape, 7)
        return F.cross_entropy(logits.reshape(-1, 7), y.reshape(-1))

    for batches, batch_size in ((100, 3), (2, 2)):
        scored = held_out_batches(loss, tokens, batches=batches, batch_size=batch_size,
                                  length=32, device=torch.device("cpu"))
        targets = scored_targets(len(tokens), 32, batches * batch_size)
        assert len(targets) == sum(n for _, n in scored)
        # The context-free model's loss over those targets is the batches' weighted mean.
        mean = sum(m * n for m, n in scored) / len(targets)
        assert mean == pytest.approx(-float(log_probs[torch.from_numpy(tokens[targets])].mean()),
                                     rel=1e-5)
