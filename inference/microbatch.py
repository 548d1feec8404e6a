"""Dynamic micro-batching: requests that arrive within a few milliseconds run as one batch.

A small image model answers one request in well under a millisecond of arithmetic; most
of the time goes to per-call overhead. So one thread takes every request already queued
(up to ``max_batch``) and runs them together through ``run_batch``, which answers each
one. While requests keep arriving together (the last batch held more than one), the first
of a batch also waits up to ``wait_s`` for company; a lone client never waits. A batch
that fails as a whole is retried one request at a time, so one bad request cannot fail
its neighbours.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("genkiln.serve")

_STOP = object()


class MicroBatcher:
    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], *, max_batch: int,
                 wait_s: float, name: str = "genkiln-batch") -> None:
        assert max_batch >= 1 and wait_s >= 0
        self.run_batch, self.max_batch, self.wait_s = run_batch, max_batch, wait_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self.batches: list[int] = []  # sizes of the batches run (tests and logs read it)
        self._company = False  # did the last batch hold more than one request?
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> Future[Any]:
        """The future answer to ``item``: its result, or the exception it raised."""
        future: Future[Any] = Future()
        self._queue.put((item, future))
        return future

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            closing = False
            until = time.monotonic() + (self.wait_s if self._company else 0.0)
            while len(batch) < self.max_batch:
                left = until - time.monotonic()
                try:
                    item = self._queue.get(timeout=left) if left > 0 else \
                        self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    closing = True
                    break
                batch.append(item)
            self._company = len(batch) > 1
            self._answer(batch)
            if closing:
                return

    def _answer(self, batch: list[tuple[Any, Future[Any]]]) -> None:
        live = [(item, future) for item, future in batch
                if future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches.append(len(live))
        try:
            results = self.run_batch([item for item, _ in live])
            assert len(results) == len(live), "run_batch answers every item"
        except Exception as exc:
            if len(live) == 1:
                live[0][1].set_exception(exc)
                return
            results = []  # find the culprit: each request alone
            for item, _ in live:
                try:
                    results.extend(self.run_batch([item]))
                except Exception as alone:
                    results.append(alone)
        for (_, future), result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
