"""The serving contract of a family: everything the server, scheduler and playground use.

A handler is built from a verified artifact (`HANDLERS` in this package names one per
family) and is one of three kinds, which decides how the scheduler runs it:

    Handler              serial: one request at a time, on one worker thread
    MicroBatchHandler    requests that arrive together run as one batch (inference.microbatch)
    ContinuousHandler    token by token in a shared decode loop (inference.continuous)

Every handler offers:
    decode(payload, accept) -> a validated request (raises ClientError: a 4xx, before the
                               model runs); `accept` is the request's Accept header
    predict(request) -> a JSON-able answer, or `Binary` (a PNG, a MIDI file) when the
                        request asked for that media type
    wants_stream(request) -> whether the request asked for a stream of events
    stream(request, cancelled) -> an iterator of JSON-able events; stops once `cancelled`
    probe() -> run one representative request, as the server loads, to time the intra-op
               thread count (inference.threads.fit_threads)
    request_models() -> the pydantic models of the request bodies it takes (/openapi.json)
    smoke_request() -> one small request it must answer 200, which /info names and a
                       deployment's smoke test sends (the promotion workflow)
    describe() -> its request kinds, context and playground form (/info, the playground)
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel

from inference.errors import ClientError

if TYPE_CHECKING:
    from inference.continuous import Sequence


class Batching(StrEnum):
    SERIAL = "serial"
    MICRO = "micro-batch"
    CONTINUOUS = "continuous"


@dataclass(frozen=True)
class Binary:
    """A non-JSON answer: the bytes and their media type (image/png, audio/midi)."""

    body: bytes
    media_type: str


@dataclass(frozen=True)
class Description:
    """What a handler says of itself.

    ``playground`` is how the playground builds one request: what the person gives
    (`input`: "text", "midi" or "none"), where it goes in the payload (`input_field`), the
    payload's other fields (`template`), whether it streams and what comes back (`output`:
    "text", "png", "midi" or "json").
    """

    playground: dict[str, Any]
    #: the request kinds it takes, the default first (none for text prompts)
    kinds: tuple[str, ...] = ()
    #: tokens of prompt and generation together, for text models
    context_limit: int | None = None


class Handler(ABC):
    """A serial handler; the base of the batching ones."""

    family: ClassVar[str]
    batching: ClassVar[Batching] = Batching.SERIAL

    @abstractmethod
    def decode(self, payload: Any, accept: str | None = None) -> Any: ...

    @abstractmethod
    def predict(self, request: Any) -> Any: ...

    def wants_stream(self, request: Any) -> bool:
        return False

    def stream(self, request: Any, cancelled: threading.Event | None = None
               ) -> Iterator[dict[str, Any]]:
        raise ClientError(f"{self.family} models answer whole responses; they do not stream")

    @abstractmethod
    def probe(self) -> None: ...

    @abstractmethod
    def request_models(self) -> list[type[BaseModel]]: ...

    @abstractmethod
    def smoke_request(self) -> dict[str, Any]: ...

    @abstractmethod
    def describe(self) -> Description: ...


class MicroBatchHandler(Handler):
    """A handler whose requests may run together: ``predict_batch`` answers each of a list
    of decoded requests exactly as ``predict`` would answer it alone."""

    batching: ClassVar[Batching] = Batching.MICRO

    @abstractmethod
    def predict_batch(self, batch: list[Any]) -> list[Any]: ...

    def predict(self, request: Any) -> Any:
        [answer] = self.predict_batch([request])
        return answer


class Job(Protocol):
    """One sequence of a request, as the scheduler follows it in the decode loop."""

    tokens: list[Any]
    finish_reason: str | None
    failure: str | None  # why it ended without an answer ("shutdown", "error", ...)

    def sequence(self, *, deadline: float = ...,
                 cancelled: threading.Event | None = ...) -> Sequence | Any: ...


class DecodeLoop(Protocol):
    """The loop a ContinuousHandler's jobs run in: text's decode loop
    (inference.continuous) or images' denoising loop (inference.denoising)."""

    closing_at: float  # time.monotonic() at which what still runs is cut (a drain)

    def submit(self, work: Any) -> None: ...

    def close(self, timeout: float = ...) -> None: ...


class GenerationFailed(Exception):
    """A job ended without an answer (the server stopped, or the loop's step failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_DONE = object()


class ContinuousHandler(Handler):
    """A handler whose requests run step by step in one shared loop (tokens for text,
    denoising steps for images): a request is split into jobs, the loop runs them beside
    every other request's, and ``collect`` makes the answer of the finished jobs.

    Outside a server, ``predict`` and ``stream`` run a request alone, blocking, in a loop
    of ``solo_slots`` rows made at first use."""

    batching: ClassVar[Batching] = Batching.CONTINUOUS
    solo_slots: ClassVar[int] = 1
    _solo: DecodeLoop | None = None
    _solo_lock: ClassVar[threading.Lock] = threading.Lock()

    @abstractmethod
    def decode_loop(self, slots: int) -> DecodeLoop: ...

    @abstractmethod
    def jobs(self, request: Any, *, emit: Callable[[dict[str, Any]], None] | None = None,
             done: Callable[[Any], None] | None = None) -> list[Any]:
        """The request's jobs; each calls ``emit`` with its stream events and ``done``
        once it ends."""

    @abstractmethod
    def collect(self, request: Any, jobs: list[Any]) -> Any: ...

    # --- without a server: one request at a time, blocking -------------------------
    def _loop(self) -> DecodeLoop:
        with self._solo_lock:
            if self._solo is None:
                self._solo = self.decode_loop(self.solo_slots)
            return self._solo

    def predict(self, request: Any) -> Any:
        finished: queue.Queue[Any] = queue.Queue()
        jobs = self.jobs(request, done=finished.put)
        for job in jobs:
            self._loop().submit(job.sequence())
        for _ in jobs:
            job = finished.get()
            if job.failure is not None:
                raise GenerationFailed(job.failure)
        return self.collect(request, jobs)

    def stream(self, request: Any, cancelled: threading.Event | None = None
               ) -> Iterator[dict[str, Any]]:
        events: queue.Queue[Any] = queue.Queue()
        [job] = self.jobs(request, emit=events.put, done=lambda _: events.put(_DONE))
        self._loop().submit(job.sequence(deadline=time.monotonic() + 3600,
                                         cancelled=cancelled))
        while (event := events.get()) is not _DONE:
            yield event
        if job.failure is not None:
            raise GenerationFailed(job.failure)
