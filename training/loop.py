"""The training loop every family shares: budget, schedule, metrics, stopping.

A family's recipe supplies `train_step(lr)` and `evaluate()`; this loop decides when to
call them, prints metrics in the stable `name=value` form SageMaker's
`metric_definitions` regexes read, and stops at the step or time budget or on SIGTERM.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from training import checkpoint, distributed
from training.config import TrainConfig
from training.recipes.contract import Trainable

#: What a recipe's `train_step` may count (tokens for text, images for image families,
#: bars for music, transitions for the racer's environment steps); the loop reports it as
#: `<unit>_per_second` over each logging window.
THROUGHPUT_UNITS = ("tokens", "images", "bars", "transitions")


class Stopped(Exception):
    """Training was asked to stop (SIGTERM: a stopped job or a spot interruption; Ctrl-C
    on a laptop), after saving a checkpoint where the run has a checkpoint folder."""

    def __init__(self, step: int, by: str = "SIGTERM") -> None:
        super().__init__(f"training stopped by {by} at step {step}")
        self.step, self.by = step, by


#: Settings that change how a run is watched, not what it computes: a resumed run may
#: differ in these.
_NOT_SHAPING = {"log_interval", "eval_interval", "eval_batches", "checkpoint_interval",
                "max_seconds", "processes_per_host", "num_threads"}


def run_fingerprint(cfg: TrainConfig, model_cfg: object) -> str:
    settings = {**asdict(cfg), **asdict(model_cfg)}  # type: ignore[call-overload]
    return checkpoint.fingerprint({k: v for k, v in settings.items() if k not in _NOT_SHAPING})


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, *, lr: float,
                   grad_clip: float) -> None:
    """One update: set the scheduled rate, back-propagate ``loss``, average the gradients
    over the data-parallel world, clip the gradient norm of the optimizer's parameters (0:
    no clipping), step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(loss.device.type, enabled=False):  # autocast covers forward only
        loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    distributed.average_gradients(params)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: asked for, or `auto` on a CUDA device."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def mixed_precision(cfg: TrainConfig, device: torch.device
                    ) -> contextlib.AbstractContextManager[object]:
    """The context forward passes run in: bf16 autocast (no loss scaling needed), or none."""
    if uses_bf16(cfg, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    recipe: Trainable,
    cfg: TrainConfig,
    *,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
    checkpoints: Path | None = None,
    fingerprint: str = "",
    device: torch.device | None = None,
    history: list[dict[str, float]] | None = None,
) -> dict[str, float]:
    """Train until the step or time budget runs out; return the final metrics.

    With ``checkpoints`` (a folder), resume from the checkpoint there if any, save one
    every ``checkpoint_interval`` steps and when stopped: a resumed run then continues
    exactly as if it had never stopped (with a time budget, the schedule follows the
    clock, so only step-budgeted runs resume bit for bit).

    In a data-parallel world (see `training.distributed`) every rank runs this loop in
    step: they agree each step on stopping, average metrics over the global batch, and
    only rank 0 evaluates and writes checkpoints; every rank resumes from them.

    With ``history`` (a list), every logged line is appended to it as a dict with its
    ``step``: the loss curves that evaluation reports plot.
    """
    stop = stop or threading.Event()
    world = distributed.current()
    precision = mixed_precision(cfg, device or torch.device("cpu"))
    objects = recipe.state_objects() if checkpoints is not None or world.active else {}
    if world.rank > 0:
        # Rank 0 draws what a one-process run draws; the others need streams of their own
        # (dropout masks, the VAE's noise) or their examples would share them.
        torch.manual_seed(cfg.seed + 7919 * world.rank)
    distributed.broadcast_modules(o for o in objects.values() if isinstance(o, torch.nn.Module))
    step = 0
    if checkpoints is not None:
        resumed = checkpoint.restore(checkpoints, objects=objects,
                                     config_fingerprint=fingerprint, rank=world.rank)
        if resumed is not None:
            step = resumed
            log(f"resumed from the checkpoint at step {step}")

    def save() -> None:
        if checkpoints is None:
            return
        ranks = checkpoint.rank_rng_states()  # a collective: every rank takes part
        if world.is_main:
            checkpoint.save(checkpoints, step=step, objects=objects,
                            config_fingerprint=fingerprint, rank_rng=ranks)

    started = time.monotonic()
    window_started, window_count = started, 0.0
    rate_name = "tokens_per_second"
    metrics: dict[str, float] = {}
    while step < cfg.max_steps:
        # Every rank must stop at the same step and follow the same schedule: agree on
        # whether any was asked to stop, and on the slowest clock.
        stopping, elapsed = distributed.maximum(float(stop.is_set()),
                                                time.monotonic() - started)
        if stopping:
            save()
            raise Stopped(step)
        if cfg.max_seconds and elapsed >= cfg.max_seconds:
            log(f"time budget of {cfg.max_seconds:g} s reached at step {step}")
            break
        step += 1
        # With a time budget the schedule follows whichever budget runs out first, so a
        # run cut by max_seconds still ends on a decayed learning rate.
        progress = step / cfg.max_steps
        if cfg.max_seconds:
            progress = max(progress, elapsed / cfg.max_seconds)
        lr = learning_rate(cfg, step, progress)
        with precision:
            out = recipe.train_step(lr)
        out = distributed.reduce_metrics(out, summed=THROUGHPUT_UNITS)
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
        if step % cfg.eval_interval == 0 and world.is_main:
            with precision:
                evaluation = recipe.evaluate()
            metrics.update(evaluation)
            log(format_metrics(step, evaluation))
            if history is not None:
                history.append({"step": float(step), **evaluation})
        if step % cfg.checkpoint_interval == 0:
            save()
    if step % cfg.eval_interval != 0 and world.is_main:
        with precision:
            evaluation = recipe.evaluate()
        metrics.update(evaluation)
        log(format_metrics(step, evaluation))
        if history is not None:
            history.append({"step": float(step), **evaluation})
    seconds = time.monotonic() - started
    metrics.update({"steps": float(step), "train_seconds": seconds})
    return metrics
