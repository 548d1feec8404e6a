"""Start this host's training workers and see them through, as torchrun would.

The `train` process (PID 1 in a container) spawns one worker per local rank, forwards
SIGTERM to them (a stopped or spot-interrupted job), and, when one fails, stops the
others rather than leave them waiting in a collective. Each worker reports its outcome as
a small JSON file, `{"code": int, "reason": str}`; the earliest failure is the job's.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

#: Seconds the other workers get to end on their own after one fails, before SIGKILL.
GRACE_S = 30.0


def write_outcome(results: Path, local_rank: int, code: int, reason: str) -> None:
    tmp = results / f".{local_rank}.tmp"
    tmp.write_text(json.dumps({"code": code, "reason": reason}))
    tmp.replace(results / f"{local_rank}.json")


def _outcome(results: Path, local_rank: int, exitcode: int | None) -> tuple[int, str]:
    path = results / f"{local_rank}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return int(data["code"]), str(data["reason"])
    return (exitcode or 1), f"training worker {local_rank} exited with code {exitcode}"


def run_workers(target: Callable[..., None], args: tuple[Any, ...], count: int,
                stop: threading.Event) -> tuple[int, str]:
    """Run ``target(local_rank, results_dir, *args)`` in ``count`` spawned processes.

    Returns (0, "") when all succeed, else the exit code and reason of the first to fail.
    ``stop`` set (by the caller's SIGTERM handler) is passed on to the workers as SIGTERM.
    """
    # A fork server imports the training code once and forks each worker from it: the
    # workers start in a moment rather than each importing torch again, and nothing in
    # the server has touched CUDA or thread pools that a fork would break.
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([target.__module__])
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="genkiln-workers-") as folder:
        results = Path(folder)
        processes = [context.Process(target=target, args=(rank, results, *args), daemon=False)
                     for rank in range(count)]
        for process in processes:
            process.start()
        failed: tuple[int, str] | None = None
        forwarded = False
        deadline = float("inf")
        while any(p.is_alive() for p in processes):
            if stop.is_set() and not forwarded:
                for p in processes:
                    if p.is_alive() and p.pid is not None:
                        p.terminate()  # SIGTERM: the worker checkpoints and ends
                forwarded = True
            for rank, p in enumerate(processes):
                if failed is None and p.exitcode not in (None, 0):
                    failed = _outcome(results, rank, p.exitcode)
                    deadline = time.monotonic() + GRACE_S
                    for other in processes:
                        if other.is_alive():
                            other.terminate()
            if time.monotonic() > deadline:
                for p in processes:
                    if p.is_alive():
                        p.kill()
            processes[0].join(timeout=0.2) if processes[0].is_alive() else time.sleep(0.2)
        for p in processes:
            p.join()
        if failed is None:
            for rank, p in enumerate(processes):
                if p.exitcode != 0:
                    failed = _outcome(results, rank, p.exitcode)
                    break
        return failed or (0, "")

