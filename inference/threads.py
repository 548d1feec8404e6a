"""Intra-op thread count for decoding, chosen by measurement rather than guessed.

Decoding one token runs many small operators; on a small model, handing each to several
OpenMP threads costs more in wake-ups than it gains, and on a busy host it can be ten
times slower than one thread. Large models are the opposite. So the server times a few
decode steps at one thread and at every core, and keeps the faster setting.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import torch

log = logging.getLogger("genkiln.serve")


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fit_threads(probe: Callable[[], object], *, forced: int | None = None,
                rounds: int = 3) -> int:
    """Set torch's intra-op threads to the faster of 1 and all cores for ``probe`` (or to
    ``forced``, GENKILN_NUM_THREADS)."""
    if forced:
        torch.set_num_threads(forced)
        return forced
    cores = available_cores()
    candidates = sorted({1, cores})
    best: dict[int, float] = {}
    probe()  # warm-up: first calls allocate and pick kernels
    for _ in range(rounds):  # interleaved, so a burst of load hits both settings alike
        for threads in candidates:
            torch.set_num_threads(threads)
            started = time.perf_counter()
            probe()
            elapsed = time.perf_counter() - started
            best[threads] = min(best.get(threads, elapsed), elapsed)
    chosen = min(best, key=lambda t: best[t])
    torch.set_num_threads(chosen)
    log.info("decode threads: %d (probe %s)", chosen,
             ", ".join(f"{t}: {s * 1000:.1f} ms" for t, s in sorted(best.items())))
    return chosen


def one_model_per_process() -> None:
    """One inter-op thread: the process serves one model, whose operators run one after
    another; parallelism comes from the intra-op threads and from batching requests."""
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already ran: leave it
        log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
