"""The training loop every family shares: budget, schedule, metrics, stopping.

A family's recipe supplies `train_step(lr)` and `evaluate()`; this loop decides when to
call them, prints metrics in the stable `name=value` form SageMaker's
`metric_definitions` regexes read, and stops at the step or time budget or on SIGTERM.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch

from training import checkpoint
from training.config import TrainConfig

#: What a recipe's `train_step` may count (tokens for text, images for image families);
#: the loop reports it as `<unit>_per_second` over each logging window.
THROUGHPUT_UNITS = ("tokens", "images")


class Stopped(Exception):
    """Training was asked to stop (SIGTERM: a stopped job or a spot interruption)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training stopped by SIGTERM at step {step}")
        self.step = step


class Recipe(Protocol):
    def train_step(self, lr: float) -> dict[str, float]: ...

    def evaluate(self) -> dict[str, float]: ...

    def state_objects(self) -> Mapping[str, checkpoint.Stateful]: ...


#: Settings that change how a run is watched, not what it computes: a resumed run may
#: differ in these.
_NOT_SHAPING = {"log_interval", "eval_interval", "eval_batches", "checkpoint_interval",
                "max_seconds"}


def run_fingerprint(cfg: TrainConfig, model_cfg: object) -> str:
    settings = {**asdict(cfg), **asdict(model_cfg)}  # type: ignore[call-overload]
    return checkpoint.fingerprint({k: v for k, v in settings.items() if k not in _NOT_SHAPING})


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, *, lr: float,
                   grad_clip: float) -> None:
    """One update: set the scheduled rate, back-propagate ``loss``, clip the gradient norm
    of the optimizer's parameters (0: no clipping), step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to min_learning_rate as progress goes 0 -> 1."""
    if step <= cfg.warmup_steps:
        return cfg.learning_rate * step / max(1, cfg.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_learning_rate + cosine * (cfg.learning_rate - cfg.min_learning_rate)


def format_metrics(step: int, metrics: dict[str, float]) -> str:
    parts = [f"step={step}"] + [f"{k}={v:.6g}" for k, v in metrics.items()]
    return " ".join(parts)


def fit(
    recipe: Recipe,
    cfg: TrainConfig,
    *,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
    checkpoints: Path | None = None,
    fingerprint: str = "",
    history: list[dict[str, float]] | None = None,
) -> dict[str, float]:
    """Train until the step or time budget runs out; return the final metrics.

    With ``checkpoints`` (a folder), resume from the checkpoint there if any, save one
    every ``checkpoint_interval`` steps and when stopped: a resumed run then continues
    exactly as if it had never stopped (with a time budget, the schedule follows the
    clock, so only step-budgeted runs resume bit for bit).

    With ``history`` (a list), every logged line is appended to it as a dict with its
    ``step``: the loss curves that evaluation reports plot.
    """
    stop = stop or threading.Event()
    objects = recipe.state_objects() if checkpoints is not None else {}
    step = 0
    if checkpoints is not None:
        resumed = checkpoint.restore(checkpoints, objects=objects,
                                     config_fingerprint=fingerprint)
        if resumed is not None:
            step = resumed
            log(f"resumed from the checkpoint at step {step}")

    def save() -> None:
        if checkpoints is not None:
            checkpoint.save(checkpoints, step=step, objects=objects,
                            config_fingerprint=fingerprint)

    started = time.monotonic()
    window_started, window_count = started, 0.0
    rate_name = "tokens_per_second"
    metrics: dict[str, float] = {}
    while step < cfg.max_steps:
        if stop.is_set():
            save()
            raise Stopped(step)
        step += 1
        elapsed = time.monotonic() - started
        # With a time budget the schedule follows whichever budget runs out first, so a
        # run cut by max_seconds still ends on a decayed learning rate.
        progress = step / cfg.max_steps
        if cfg.max_seconds:
            progress = max(progress, elapsed / cfg.max_seconds)
        lr = learning_rate(cfg, step, progress)
        out = recipe.train_step(lr)
        for unit in THROUGHPUT_UNITS:  # counted, not averaged: reported as a rate
            if unit in out:
                window_count += out.pop(unit)
                rate_name = f"{unit}_per_second"
        metrics.update(out)
        if step % cfg.log_interval == 0 or step == 1:
            now = time.monotonic()
            rate = window_count / max(now - window_started, 1e-9)
            logged = {**out, "learning_rate": lr, rate_name: rate}
            log(format_metrics(step, logged))
            if history is not None:
                history.append({"step": float(step), **logged})
            window_started, window_count = now, 0.0
            metrics[rate_name] = rate
        if step % cfg.eval_interval == 0:
            evaluation = recipe.evaluate()
            metrics.update(evaluation)
            log(format_metrics(step, evaluation))
            if history is not None:
                history.append({"step": float(step), **evaluation})
        if step % cfg.checkpoint_interval == 0:
            save()
        if cfg.max_seconds and time.monotonic() - started >= cfg.max_seconds:
            log(f"time budget of {cfg.max_seconds:g} s reached at step {step}")
            break
    if step % cfg.eval_interval != 0:
        evaluation = recipe.evaluate()
        metrics.update(evaluation)
        log(format_metrics(step, evaluation))
        if history is not None:
            history.append({"step": float(step), **evaluation})
    seconds = time.monotonic() - started
    metrics.update({"steps": float(step), "train_seconds": seconds})
    return metrics
