"""Held-out loss of sequence models: every held-out token scored once, with context."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.data.tokens import held_out_loss, scored_windows


@pytest.mark.parametrize(("n", "length"), [(10, 4), (11, 4), (5, 4), (2, 8), (1000, 128)])
def test_every_target_is_scored_exactly_once(n, length):
    window = min(length, n - 1)
    scored = [s + 1 + j for s, first in scored_windows(n, window) for j in range(first, window)]
    assert scored == list(range(1, n))


def test_later_windows_score_only_tokens_with_half_a_window_of_context():
    for _start, first in scored_windows(1000, 128)[1:]:
        assert first >= 64


def test_loss_equals_the_mean_over_all_held_out_tokens():
    """A context-free model (fixed log-probabilities) makes the exact mean checkable."""
    vocab = 7
    log_probs = torch.log_softmax(torch.arange(vocab, dtype=torch.float32), dim=0)
    tokens = np.random.default_rng(0).integers(0, vocab, size=501)

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = log_probs.expand(*x.shape, vocab)
        return F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))

    expected = -float(log_probs[torch.from_numpy(tokens[1:])].mean())
    got = held_out_loss(loss, tokens, batches=100, batch_size=3, length=32,
                        device=torch.device("cpu"))
    assert got["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert got["val_perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
    # A budget of fewer windows evaluates an even spread of them, the same every time.
    a = held_out_loss(loss, tokens, batches=2, batch_size=2, length=32,
                      device=torch.device("cpu"))
    assert a == held_out_loss(loss, tokens, batches=2, batch_size=2, length=32,
                              device=torch.device("cpu"))
    assert a["val_loss"] != pytest.approx(expected, rel=1e-6)
