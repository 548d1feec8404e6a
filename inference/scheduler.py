"""Who runs a request, when, and for how long: the server hands every decoded request here.

- Admission: at most `max_concurrent_requests` requests are in flight (running or
  waiting); one more is answered 429 at once, as text-generation-inference does, so a
  client or SageMaker's autoscaling backs off instead of timing out.
- Deadline: each request is cut `request_timeout_s` after it arrived (below SageMaker's
  60 s). A text generation that has begun ends cleanly with finish_reason "deadline";
  a request that could not start in time is answered 503.
- Drain: on SIGTERM the server calls `drain(seconds)`: new requests get 503, and work
  still running when the drain ends is cut (a stream ends with an error event that says
  so), inside SageMaker's 30 s before SIGKILL.
- Execution, by the handler's declared kind (inference.handlers.contract):
    a ContinuousHandler (text): the continuous-batching decode loop
        (inference.continuous), `max_batch_size` sequences per step, or one at a time
        with batching off;
    a MicroBatchHandler (images): the micro-batcher (inference.microbatch);
    any other Handler: one worker thread, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inference.errors import ClientError
from inference.handlers import ContinuousHandler, Handler, MicroBatchHandler
from inference.handlers.contract import DecodeLoop, Job
from inference.microbatch import MicroBatcher
from inference.settings import (
    GENKILN_MAX_CONCURRENT_REQUESTS,
    GENKILN_REQUEST_TIMEOUT_SECONDS,
    ServingSettings,
)

log = logging.getLogger("genkiln.serve")

_END = object()


def _overloaded(limit: int) -> ClientError:
    return ClientError(
        f"the server is at its limit of {limit} concurrent requests; retry shortly, or raise "
        f"{GENKILN_MAX_CONCURRENT_REQUESTS} or add instances", status=429,
        error_type="overloaded")


def _timed_out(seconds: float) -> ClientError:
    return ClientError(
        f"the request could not be served within {seconds:g} s "
        f"({GENKILN_REQUEST_TIMEOUT_SECONDS}); retry, ask for fewer tokens or images, "
        f"or add instances", status=503, error_type="overloaded")


SHUTTING_DOWN = ("the server is shutting down (SIGTERM): retry on another instance, or "
                 "once it is back")


def _failed(reason: str) -> Exception:
    if reason == "shutdown":
        return ClientError(SHUTTING_DOWN, status=503, error_type="overloaded")
    if reason == "cancelled":
        return ClientError("the request was cancelled", status=499, error_type="generation")
    return RuntimeError(f"generation ended without an answer ({reason})")


class Mailbox:
    """Events from the decode thread to streams on the event loop, delivered in bulk.

    One decode step makes a token for every active stream; waking the event loop once
    per token (call_soon_threadsafe each) would cost 32 wake-ups a step at 32 streams.
    Posts made before the loop runs the delivery share one wake-up instead.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[asyncio.Queue[Any], Any]] = []
        self._lock = threading.Lock()

    def post(self, queue: asyncio.Queue[Any], item: Any) -> None:
        """Put ``item`` on ``queue`` (from any thread)."""
        with self._lock:
            self._pending.append((queue, item))
            if len(self._pending) > 1:
                return  # a delivery is already on its way
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for queue, item in pending:
            queue.put_nowait(item)


class Scheduler:
    def __init__(self, handler: Handler, settings: ServingSettings) -> None:
        self.handler, self.settings = handler, settings
        self.in_flight = 0  # changed on the event loop's thread only
        #: time.monotonic() at which work still running is cut (inf until a drain)
        self.closing_at = float("inf")
        self._mailbox: Mailbox | None = None  # made on the event loop, at first use
        self.mode = handler.batching
        self.generator: ContinuousHandler | None = None
        self.decode_loop: DecodeLoop | None = None
        self.batcher: MicroBatcher | None = None
        self.worker: ThreadPoolExecutor | None = None
        if isinstance(handler, ContinuousHandler):
            self.generator = handler
            self.decode_loop = handler.decode_loop(settings.decode_slots)
        elif isinstance(handler, MicroBatchHandler):
            self.batcher = MicroBatcher(
                handler.predict_batch,
                max_batch=settings.max_batch_size if settings.batching else 1,
                wait_s=settings.batch_wait_ms / 1000.0 if settings.batching else 0.0)
        else:
            self.worker = ThreadPoolExecutor(max_workers=1,
                                             thread_name_prefix="genkiln-generate")
        log.info("scheduler: %s, batch %d, %d requests in flight at most, %g s deadline",
                 self.mode, settings.decode_slots if self.decode_loop is not None
                 else settings.max_batch_size if settings.batching else 1,
                 settings.max_concurrent_requests, settings.request_timeout_s)

    def close(self) -> None:
        if self.decode_loop is not None:
            self.decode_loop.close()
        if self.batcher is not None:
            self.batcher.close()
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=True)

    def drain(self, seconds: float) -> None:
        """Stop taking requests; cut what still runs ``seconds`` from now (SIGTERM)."""
        self.closing_at = min(self.closing_at, time.monotonic() + seconds)
        if self.decode_loop is not None:
            self.decode_loop.closing_at = self.closing_at
        log.info("draining: %d requests in flight, cut in %g s", self.in_flight, seconds)

    @property
    def draining(self) -> bool:
        return self.closing_at != float("inf")

    # --- admission ---------------------------------------------------------------
    def _admit(self) -> float:
        """Count the request in, or refuse it; its deadline (time.monotonic())."""
        if self.draining:
            raise ClientError(SHUTTING_DOWN, status=503, error_type="overloaded")
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise _overloaded(self.settings.max_concurrent_requests)
        self.in_flight += 1
        return time.monotonic() + self.settings.request_timeout_s

    def _release(self) -> None:
        self.in_flight -= 1

    # --- whole answers -----------------------------------------------------------
    async def predict(self, decoded: Any) -> Any:
        deadline = self._admit()
        try:
            if self.generator is not None:
                return await self._generate(self.generator, decoded, deadline)
            loop = asyncio.get_running_loop()
            if self.batcher is not None:
                future = asyncio.wrap_future(self.batcher.submit(decoded))
            else:
                future = loop.run_in_executor(self.worker, self.handler.predict, decoded)
            try:
                return await asyncio.wait_for(
                    future, min(deadline, self.closing_at) - time.monotonic())
            except TimeoutError:
                if time.monotonic() >= self.closing_at:
                    raise _failed("shutdown") from None
                raise _timed_out(self.settings.request_timeout_s) from None
        finally:
            self._release()

    async def _generate(self, handler: ContinuousHandler, decoded: Any, deadline: float
                        ) -> Any:
        loop = asyncio.get_running_loop()
        all_done = asyncio.Event()
        cancelled = threading.Event()
        ended: list[Any] = []

        def done(job: Any) -> None:
            ended.append(job)
            if len(ended) == len(jobs):
                loop.call_soon_threadsafe(all_done.set)

        jobs: list[Job] = handler.jobs(decoded, done=done)
        assert self.decode_loop is not None
        for job in jobs:
            self.decode_loop.submit(job.sequence(deadline=deadline, cancelled=cancelled))
        try:
            await all_done.wait()
        finally:
            cancelled.set()  # cancelled or finished: nothing more to decode for it
        for job in jobs:
            if job.failure == "deadline":  # ended with nothing to give (an image job)
                raise _timed_out(self.settings.request_timeout_s)
            if job.failure is not None:
                raise _failed(job.failure)
            if not job.tokens and job.finish_reason == "deadline":
                raise _timed_out(self.settings.request_timeout_s)
        return handler.collect(decoded, jobs)

    # --- streams -----------------------------------------------------------------
    async def stream(self, decoded: Any) -> AsyncGenerator[dict[str, Any], None]:
        """Events of a streamed request. Admission and errors before the first event
        raise, so the server can still answer with a status code."""
        deadline = self._admit()
        try:
            if self.generator is not None:
                async for event in self._stream_tokens(self.generator, decoded, deadline):
                    yield event
            else:
                async for event in self._stream_serial(decoded):
                    yield event
        finally:
            self._release()

    async def _stream_tokens(self, handler: ContinuousHandler, decoded: Any, deadline: float
                             ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = Mailbox(loop)
        post = self._mailbox.post
        events: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        [job] = handler.jobs(decoded, emit=lambda e: post(events, e),
                             done=lambda _: post(events, _END))
        assert self.decode_loop is not None
        self.decode_loop.submit(job.sequence(deadline=deadline, cancelled=cancelled))
        sent = 0
        try:
            while (event := await events.get()) is not _END:
                sent += 1
                yield event
        finally:
            cancelled.set()  # the client went away, or the stream ended
        if job.failure is not None:
            if sent == 0:
                raise _failed(job.failure)
            if job.failure == "shutdown":
                yield {"error": f"{SHUTTING_DOWN}; the generation was cut after "
                                f"{len(job.tokens)} tokens", "error_type": "overloaded"}
                return
            incident = uuid.uuid4().hex[:12]
            log.error("stream ended early: %s (incident %s)", job.failure, incident)
            yield {"error": f"generation stopped early ({job.failure}; incident {incident})",
                   "error_type": "generation"}
        elif sent == 0:
            raise _timed_out(self.settings.request_timeout_s)

    async def _stream_serial(self, decoded: Any) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for event in self.handler.stream(decoded, cancelled):
                    loop.call_soon_threadsafe(events.put_nowait, event)
            except ClientError as exc:
                loop.call_soon_threadsafe(events.put_nowait, exc)
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("streamed generation failed (incident %s)", incident)
                loop.call_soon_threadsafe(events.put_nowait, {
                    "error": f"internal error while generating (incident {incident})",
                    "error_type": "generation"})
            finally:
                loop.call_soon_threadsafe(events.put_nowait, _END)

        executor = self.worker or ThreadPoolExecutor(max_workers=1)
        loop.run_in_executor(executor, produce)
        try:
            while (event := await events.get()) is not _END:
                if isinstance(event, ClientError):
                    raise event
                yield event
        finally:
            cancelled.set()
