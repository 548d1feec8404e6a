"""Step-boundary batching: one denoising loop serving every image request at once.

The image counterpart of the text decode loop (inference.continuous). One thread owns
the diffusion model; between two denoising steps it admits waiting requests and drops
the finished ones, so a request joins the running batch at the next step instead of
waiting for everyone else's 25 steps to end. Each request keeps its own sampler, noise
generator, step count and guidance (training.models.diffusion.Denoising), and one UNet
call advances them all, whatever step each has reached.

A request ends when its steps are done ("done"), its deadline passes ("deadline"), its
client goes away ("cancelled"), the server drains after SIGTERM ("shutdown"), or the
step fails ("error").
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from training.models.diffusion import Denoising, PromptDiffusion, denoise_step

log = logging.getLogger("genkiln.serve")

_STOP = object()


@dataclass(eq=False)
class Work:
    """One request's images, as the loop sees them."""

    run: Denoising
    #: called after each step, in the loop's thread (stream previews)
    on_step: Callable[[Denoising], None]
    #: called once at the end with the reason (see the module's docstring)
    on_finish: Callable[[str], None]
    deadline: float = float("inf")
    cancelled: threading.Event = field(default_factory=threading.Event)


class DenoisingLoop:
    def __init__(self, model: PromptDiffusion, *, images: int,
                 name: str = "genkiln-denoise") -> None:
        """``images``: how many images one UNet call takes at most (a request of more
        runs alone)."""
        assert images >= 1
        self.model, self.images = model, images
        self.closing_at = float("inf")  # set by the scheduler's drain
        self.batches: list[int] = []  # requests per step (tests and logs read it)
        self._queue: queue.Queue[Work | object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def slots(self) -> int:
        return self.images

    def submit(self, work: Work) -> None:
        self._queue.put(work)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        active: list[Work] = []
        waiting: list[Work] = []
        while True:
            # Idle, block for work; busy, take what arrived during the last step.
            try:
                item = self._queue.get() if not active and not waiting else \
                    self._queue.get_nowait()
                while True:
                    if item is _STOP:
                        for work in [*active, *waiting]:
                            self._finish(work, "shutdown")
                        return
                    assert isinstance(item, Work)
                    waiting.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic()
            for work in [*active, *waiting]:
                reason = self._stale(work, now)
                if reason is not None:
                    (active if work in active else waiting).remove(work)
                    self._finish(work, reason)
            used = sum(len(w.run.x) for w in active)
            while waiting and (not active or used + len(waiting[0].run.x) <= self.images):
                work = waiting.pop(0)
                active.append(work)
                used += len(work.run.x)
            if not active:
                continue
            self.batches.append(len(active))
            try:
                with torch.inference_mode():
                    denoise_step(self.model, [w.run for w in active])
            except Exception:
                log.exception("a denoising step failed; its %d requests end", len(active))
                for work in active:
                    self._finish(work, "error")
                active = []
                continue
            for work in list(active):
                try:
                    work.on_step(work.run)
                except Exception:
                    log.exception("a step callback failed")
                if work.run.finished:
                    active.remove(work)
                    self._finish(work, "done")

    def _stale(self, work: Work, now: float) -> str | None:
        if work.cancelled.is_set():
            return "cancelled"
        if now >= self.closing_at:
            return "shutdown"
        if now >= work.deadline:
            return "deadline"
        return None

    @staticmethod
    def _finish(work: Work, reason: str) -> None:
        try:
            work.on_finish(reason)
        except Exception:
            log.exception("a finish callback failed")
