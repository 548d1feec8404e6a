"""Token streams for sequence families: documents -> one array, held-out splits, windows."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch

from training.data.errors import DataError

T = TypeVar("T")


def concat(sequences: Iterable[Sequence[int]], end_id: int | None = None) -> np.ndarray:
    """One token array; each sequence followed by ``end_id`` when given."""
    out: list[int] = []
    for ids in sequences:
        out.extend(ids)
        if end_id is not None:
            out.append(end_id)
    return np.asarray(out, dtype=np.int64)


def split(items: Sequence[T], fraction: float, seed: int, what: str,
          group: Callable[[T], Hashable] | None = None) -> tuple[list[T], list[T]]:
    """A seeded train / held-out split of whole items (documents, melodies).

    With ``group``, items of one group (the same key) fall on the same side: where the
    data repeats itself (one tune in several harmonisations), held-out items are then
    unseen, not copies of training ones. Groups are held out whole, in a seeded order,
    until ``fraction`` of the items is.
    """
    if len(items) < 2:
        raise DataError(f"{what} holds {len(items)} item(s); a held-out split needs at least "
                        f"two (add data or give a validation channel)")
    keys: list[Hashable] = list(range(len(items))) if group is None else \
        [group(item) for item in items]
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    if len(members) < 2:
        raise DataError(f"{what}: all {len(items)} items repeat one another (one key); "
                        f"a held-out split needs two (add data or give a validation channel)")
    order = list(members)
    random.Random(seed).shuffle(order)
    n_val = min(len(items) - 1, max(1, round(len(items) * fraction)))
    cut, held = 0, 0
    while held < n_val and cut < len(order) - 1:  # at least one group is left to train on
        held += len(members[order[cut]])
        cut += 1
    return ([items[i] for key in order[cut:] for i in members[key]],
            [items[i] for key in order[:cut] for i in members[key]])


def require_length(name: str, tokens: np.ndarray, need: int, knob: str) -> None:
    if len(tokens) < need:
        raise DataError(f"the {name} split holds {len(tokens)} tokens, fewer than the "
                        f"{need} one training window needs; add data, lower {knob}, or "
                        f"raise val_fraction")


def windows(tokens: np.ndarray, generator: torch.Generator, batch_size: int, length: int,
            device: torch.device, rows: slice = slice(None)
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: inputs (B, length) and next-token targets (B, length).

    ``rows`` keeps a part of the batch (a data-parallel rank's); the generator advances as
    for the whole batch, so every rank draws the same batch and takes its own rows.
    """
    starts = torch.randint(len(tokens) - length, (batch_size,), generator=generator).numpy()
    starts = starts[rows]
    xy = torch.from_numpy(np.stack([tokens[s:s + length + 1] for s in starts])).to(device)
    return xy[:, :-1], xy[:, 1:]


#: Targets a loss function skips (torch's cross_entropy default).
IGNORE = -100


def scored_windows(n_tokens: int, length: int) -> list[tuple[int, int]]:
    """(start, first scored target) of the windows that score a stream's targets once.

    Strided evaluation: windows of ``length`` start every half window; the first scores
    all its targets, each later one only those the earlier ones did not, so every token
    after the first is predicted exactly once, with at least half a window of context
    (but near the stream's start). This is the measure an n-gram baseline takes, token
    for token, without charging the model for the context-free start of random windows.
    """
    n_targets = n_tokens - 1
    if n_targets < length:
        return [(0, 0)] if n_targets > 0 else []
    stride = max(1, length // 2)
    out, covered = [], 0  # targets 1..covered (by index in the stream) are scored
    start = 0
    while covered < n_targets:
        start = min(start, n_targets - length)
        out.append((start, covered - start))
        covered = start + length
        start += stride
    return out


def held_out_plan(n_tokens: int, length: int, limit: int) -> list[tuple[int, int]]:
    """The strided windows (`scored_windows`) a held-out evaluation runs: at most ``limit``,
    spread evenly over a longer stream, the same ones every time."""
    window = min(length, n_tokens - 1)
    plan = scored_windows(n_tokens, window)
    if len(plan) > limit:
        plan = [plan[round(i * (len(plan) - 1) / (limit - 1))] for i in range(limit)] \
            if limit > 1 else plan[:1]
    return plan


def scored_targets(n_tokens: int, length: int, limit: int) -> np.ndarray:
    """Indices in the stream of the targets `held_out_plan`'s windows score (a baseline
    scored on these is scored on what the model is)."""
    window = min(length, n_tokens - 1)
    return np.asarray(sorted({s + 1 + j for s, first in held_out_plan(n_tokens, length, limit)
                              for j in range(first, window)}), dtype=np.int64)


@torch.no_grad()
def held_out_batches(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     tokens: np.ndarray, *, batches: int, batch_size: int,
                     length: int, device: torch.device) -> list[tuple[float, int]]:
    """(mean loss, targets scored) of each batch of `held_out_plan`'s windows (at most
    ``batches * batch_size``)."""
    window = min(length, len(tokens) - 1)
    plan = held_out_plan(len(tokens), length, batches * batch_size)
    out = []
    for i in range(0, len(plan), batch_size):
        chunk = plan[i:i + batch_size]
        xy = torch.from_numpy(np.stack([tokens[s:s + window + 1] for s, _ in chunk]))
        x, y = xy[:, :-1].clone(), xy[:, 1:].clone()
        for row, (_, first) in enumerate(chunk):
            y[row, :first] = IGNORE
        out.append((loss(x.to(device), y.to(device)).item(), int((y != IGNORE).sum())))
    return out


def held_out_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  tokens: np.ndarray, *, batches: int, batch_size: int,
                  length: int, device: torch.device) -> dict[str, float]:
    """Mean next-token loss over the held-out stream (strided, see `scored_windows`)."""
    scored = held_out_batches(loss, tokens, batches=batches, batch_size=batch_size,
                              length=length, device=device)
    count = sum(n for _, n in scored)
    val_loss = sum(mean * n for mean, n in scored) / max(1, count)
    return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0))}
