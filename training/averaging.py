"""Exponential moving averages of a network's weights (Polyak averaging), the weights that
sample and are exported in the generative families that keep one (diffusion, the GAN's
generator): averaging the last few hundred updates smooths out the noise of each, which
samples measurably better than the last weights do."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.swa_utils import AveragedModel


def _update(decay: float) -> Callable[..., None]:
    """The average's update, with the usual warm-up: early on the average follows the
    weights closely (decay (1 + n) / (10 + n) until that reaches ``decay``)."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               n: torch.Tensor) -> None:
        if averaged and not averaged[0].is_floating_point():  # counters: the latest
            torch._foreach_copy_(averaged, current)
            return
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


def moving_average(module: torch.nn.Module, decay: float, *, buffers: bool = False
                   ) -> AveragedModel:
    """A copy of ``module`` whose `update_parameters(module)` moves it toward the module's
    weights (and, with ``buffers``, averages its buffers too, e.g. batch norm's running
    statistics)."""
    return AveragedModel(module, multi_avg_fn=_update(decay), use_buffers=buffers)
