"""Token streams for sequence families: documents -> one array, held-out splits, windows."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
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


def split(items: Sequence[T], fraction: float, seed: int, what: str) -> tuple[list[T], list[T]]:
    """A seeded train / held-out split of whole items (documents, melodies)."""
    if len(items) < 2:
        raise DataError(f"{what} holds {len(items)} item(s); a held-out split needs at least "
                        f"two (add data or give a validation channel)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = min(len(items) - 1, max(1, round(len(items) * fraction)))
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


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


@torch.no_grad()
def held_out_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  tokens: np.ndarray, *, seed: int, batches: int, batch_size: int,
                  length: int, device: torch.device) -> dict[str, float]:
    """Mean next-token loss on the same held-out windows every time, and its perplexity."""
    generator = torch.Generator().manual_seed(seed + 1)
    losses = [loss(*windows(tokens, generator, batch_size, length, device)).item()
              for _ in range(batches)]
    val_loss = sum(losses) / len(losses)
    return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0))}
