"""Batched sampling: every row by its own rule, the same token alone or in a batch."""

from __future__ import annotations

import torch

from training.models.sampling import Rule, sample_next, sample_rows


def rules(seed: int) -> list[Rule]:
    def gen(i: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 100 + i)

    return [Rule(0.0), Rule(1.0, generator=gen(1)), Rule(0.7, top_k=5, generator=gen(2)),
            Rule(1.3, top_p=0.9, generator=gen(3)),
            Rule(1.0, top_k=50, top_p=0.5, generator=gen(4))]


def test_each_row_picks_what_it_would_pick_alone() -> None:
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3
    for seed in range(20):
        together = sample_rows(logits, rules(seed))
        alone = [sample_next(logits[i], temperature=r.temperature, top_k=r.top_k,
                             top_p=r.top_p, generator=r.generator)
                 for i, r in enumerate(rules(seed))]
        assert together == alone
        assert together[0].id == int(logits[0].argmax())


def test_rows_keep_to_their_top_k_and_nucleus() -> None:
    logits = torch.randn(300, generator=torch.Generator().manual_seed(1)) * 3
    top5 = set(torch.topk(logits, 5).indices.tolist())
    probs = torch.softmax(logits, -1)
    ordered = torch.sort(probs, descending=True)
    nucleus = int((torch.cumsum(ordered.values, 0) < 0.5).sum()) + 1
    allowed_p = set(ordered.indices[:nucleus].tolist())
    gen = torch.Generator().manual_seed(2)
    batch = logits.expand(2, -1)
    for _ in range(200):
        k, p = sample_rows(batch, [Rule(1.0, top_k=5, generator=gen),
                                   Rule(1.0, top_p=0.5, generator=gen)])
        assert k.id in top5 and p.id in allowed_p


def test_draws_follow_the_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, float("-inf")]])
    expected = torch.softmax(logits[0], -1)
    gen = torch.Generator().manual_seed(3)
    counts = torch.zeros(5)
    for _ in range(4000):
        [token] = sample_rows(logits, [Rule(1.0, generator=gen)])
        counts[token.id] += 1
        assert abs(token.logprob - float(expected[token.id].log())) < 1e-5
    assert counts[4] == 0  # a ruled-out token is never drawn
    assert torch.allclose(counts / 4000, expected, atol=0.03)
