"""How many CPU threads a training job's steps run on.

PyTorch's intra-op threads default to every core, and its OpenMP threads spin while they
wait for each other: on a host whose cores are busy with other work, every step then waits
for a thread the scheduler has put aside (docs/families.md has the figures). So, as the
server does, a job on the CPU measures a few of its
own steps on one thread and on all the cores it may use, and keeps the faster. The steps
measured are undone: weights, optimizer moments and random states are put back, so the
run trains exactly as it would have.

`num_threads` sets the count instead (0, the default, measures). Float results depend on
the count, so two runs are bit-for-bit alike only with the same count: set it where that
matters (a resumed run measures again).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Iterator, Mapping

import torch

from training.checkpoint import Stateful
from training.recipes.contract import Trainable


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def undone(objects: Mapping[str, Stateful]) -> Iterator[None]:
    """Run the block, then put ``objects`` and torch's random state back as they were."""
    generators = {n: o.get_state() for n, o in objects.items() if isinstance(o, torch.Generator)}
    states = {n: copy.deepcopy(o.state_dict()) for n, o in objects.items()
              if not isinstance(o, torch.Generator)}
    rng = torch.get_rng_state()
    try:
        yield
    finally:
        for name, obj in objects.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(generators[name])
            else:
                obj.load_state_dict(states[name])
        torch.set_rng_state(rng)


def fit_threads(recipe: Trainable, *, lr: float, requested: int, processes: int = 1,
                precision: contextlib.AbstractContextManager[object] | None = None,
                log: Callable[[str], None] = print, rounds: int = 2) -> int:
    """Set torch's intra-op threads for this job's steps: ``requested`` when given; with
    several processes on the host, an equal share of its cores each; else the faster of
    one thread and all cores over a few measured (and undone) steps."""
    cores = usable_cores()
    if requested or processes > 1 or cores == 1:
        chosen = requested or max(1, cores // processes)
        torch.set_num_threads(chosen)
        return chosen
    context = precision or contextlib.nullcontext()
    best: dict[int, float] = {}
    with undone(recipe.state_objects()), context:
        recipe.train_step(lr)  # warm-up: first steps allocate and pick kernels
        for _ in range(rounds):  # interleaved, so a burst of load hits both alike
            for threads in (1, cores):
                torch.set_num_threads(threads)
                started = time.perf_counter()
                recipe.train_step(lr)
                elapsed = time.perf_counter() - started
                best[threads] = min(best.get(threads, elapsed), elapsed)
    chosen = min(best, key=lambda t: best[t])
    torch.set_num_threads(chosen)
    log(f"threads: {chosen} (a step took {best[1] * 1000:.0f} ms on 1, "
        f"{best[cores] * 1000:.0f} ms on {cores}; set num_threads to choose)")
    return chosen
