"""Continuous batching: one decode loop serving every text request at once.

One thread owns the model's slot decoder (training.models.decoding). Between two decode
steps it admits waiting sequences into free rows (prefilling each prompt) and drops the
finished ones, so requests join and leave the running batch at token boundaries instead
of waiting for a whole batch to end (Yu et al. 2022, "Orca"). Each sequence samples with
its own parameters and its own torch.Generator, in its own order of draws, so a seeded
request gives the same tokens whether it ran alone or beside thirty others.

A sequence ends when its callback says so (end of text, a stop sequence), when it has
made max_new_tokens or filled the context ("length"), when its deadline passes
("deadline"), when its client goes away ("cancelled"), or when the server, draining
after SIGTERM, cuts what still runs ("shutdown").
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from training.models.decoding import SlotDecoder
from training.models.sampling import (
    Rule,
    SampledToken,
    apply_frequency_penalty,
    apply_presence_penalty,
    apply_repetition_penalty,
    apply_watermark,
    sample_rows,
)

log = logging.getLogger("genkiln.serve")


@dataclass(eq=False)
class Sequence:
    """One prompt's generation, as the decode loop sees it."""

    prompt: list[int]
    max_new_tokens: int
    #: called with each sampled token (in the loop's thread); True ends the sequence.
    on_token: Callable[[SampledToken], bool]
    #: called once at the end with the reason: "length", "deadline", "cancelled",
    #: "stopped" (on_token ended it), "shutdown" or "error".
    on_finish: Callable[[str], None]
    temperature: float = 0.0  # 0 is greedy
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    typical_p: float | None = None
    watermark: bool = False
    top_n: int = 0  # alternatives reported with each token
    generator: torch.Generator | None = None
    deadline: float = float("inf")  # time.monotonic() after which the sequence is cut
    cancelled: threading.Event = field(default_factory=threading.Event)
    produced: int = 0
    last: int = -1  # the token to feed next
    seen: torch.Tensor | None = None  # prompt + generated ids, for the penalties
    finished: bool = False

    @property
    def rule(self) -> Rule:
        return Rule(self.temperature, self.top_k, self.top_p, self.generator,
                    typical_p=self.typical_p, top_n=self.top_n)

    @property
    def _penalised(self) -> bool:
        return (self.repetition_penalty is not None and self.repetition_penalty != 1.0) \
            or bool(self.frequency_penalty) or bool(self.presence_penalty)

    @property
    def _processed(self) -> bool:
        """Its logits are rewritten before sampling (a penalty, the watermark)."""
        return self._penalised or self.watermark

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """This sequence's row of logits after its penalties and watermark."""
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            assert self.seen is not None
            logits = apply_repetition_penalty(logits, self.seen, self.repetition_penalty)
        if self.frequency_penalty:
            assert self.seen is not None
            logits = apply_frequency_penalty(logits, self.seen, self.frequency_penalty)
        if self.presence_penalty:
            assert self.seen is not None
            logits = apply_presence_penalty(logits, self.seen, self.presence_penalty)
        if self.watermark:
            previous = self.last if self.last >= 0 else self.prompt[-1]
            logits = apply_watermark(logits, previous)
        return logits


class ContinuousBatcher:
    """The decode loop: a daemon thread stepping every active sequence together."""

    def __init__(self, decoder: SlotDecoder, *, name: str = "genkiln-decode") -> None:
        self.decoder = decoder
        self._rows: list[Sequence] = []  # row i of the decoder is _rows[i]
        self._waiting: deque[Sequence] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        #: time.monotonic() after which every sequence is cut with "shutdown" (set when the
        #: server drains on SIGTERM)
        self.closing_at = float("inf")
        self.steps = 0  # decode steps taken (tests read it to see batches form)
        self.widest = 0  # the largest batch one step has served
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def slots(self) -> int:
        return self.decoder.slots

    def submit(self, sequence: Sequence) -> None:
        with self._wake:
            if self._stopping:
                sequence.on_finish("shutdown")
                return
            self._waiting.append(sequence)
            self._wake.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    # --- the loop ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._rows and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    leftovers = [*self._rows, *self._waiting]
                    self._rows.clear()
                    self._waiting.clear()
                    break
                admitted: list[Sequence] = []
                while self._waiting and len(self._rows) + len(admitted) < self.slots:
                    admitted.append(self._waiting.popleft())
            try:
                self._iterate(admitted)
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("decode step failed (incident %s)", incident)
                for sequence in [*self._rows, *admitted]:
                    self._safe_finish(sequence, "error")
                while self.decoder.active:
                    self.decoder.remove(self.decoder.active - 1)
                self._rows.clear()
        for sequence in leftovers:
            self._safe_finish(sequence, "shutdown")

    def _iterate(self, admitted: list[Sequence]) -> None:
        now = time.monotonic()
        joining = []
        for sequence in admitted:
            reason = self._stale(sequence, now)
            if reason is None:
                joining.append(sequence)
            else:
                self._safe_finish(sequence, reason)
        if joining:  # every newcomer's prompt in one pass, then its first token
            logits = self.decoder.prefill([s.prompt for s in joining])  # (n, vocab)
            self._rows.extend(joining)
            for sequence in joining:
                if sequence.seen is None and sequence._penalised:
                    sequence.seen = torch.tensor(sequence.prompt, device=logits.device)
            self._advance(joining, logits)
        self._drop_finished(time.monotonic())
        if not self._rows:
            return
        logits = self.decoder.step([s.last for s in self._rows])  # (B, vocab)
        self.steps += 1
        self.widest = max(self.widest, len(self._rows))
        self._advance(self._rows, logits)
        self._drop_finished(time.monotonic())

    def _stale(self, sequence: Sequence, now: float) -> str | None:
        if sequence.cancelled.is_set():
            return "cancelled"
        if now >= self.closing_at:
            return "shutdown"
        if now >= sequence.deadline:
            return "deadline"
        return None

    def _advance(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
        """Sample one token for each of ``sequences`` from its row of ``logits``: every
        row's sampling in one batched call, each by its own rule and generator."""
        processed = [i for i, s in enumerate(sequences) if s._processed]
        if processed:
            logits = logits.float().clone()  # penalties and the watermark rewrite rows
            for i in processed:
                logits[i] = sequences[i].process(logits[i])
        picked = sample_rows(logits, [s.rule for s in sequences])
        for sequence, token in zip(sequences, picked, strict=True):
            sequence.produced += 1
            sequence.last = token.id
            if sequence.seen is not None:
                sequence.seen = torch.cat([sequence.seen, sequence.seen.new_tensor([token.id])])
            try:
                stop = sequence.on_token(token)
            except Exception:
                log.exception("a token callback failed; ending that sequence")
                stop, sequence.produced = True, -1
            if stop:
                sequence.max_new_tokens = -1  # ended by its callback

    def _drop_finished(self, now: float) -> None:
        for row in range(len(self._rows) - 1, -1, -1):
            sequence = self._rows[row]
            reason = None
            if sequence.max_new_tokens < 0:
                reason = "stopped" if sequence.produced >= 0 else "error"
            elif sequence.produced >= sequence.max_new_tokens \
                    or self.decoder.room(row) < 1:
                reason = "length"
            else:
                reason = self._stale(sequence, now)
            if reason is None:
                continue
            self.decoder.remove(row)
            last = self._rows.pop()
            if row < len(self._rows):
                self._rows[row] = last
            self._safe_finish(sequence, reason)

    @staticmethod
    def _safe_finish(sequence: Sequence, reason: str) -> None:
        if sequence.finished:
            return
        sequence.finished = True
        try:
            sequence.on_finish(reason)
        except Exception:
            log.exception("a finish callback failed")
