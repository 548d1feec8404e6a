"""Text generation in text-generation-inference's shapes: the Transformer, and any family
whose model offers `generate()`, `context_limit` and a slot decoder
(training.models.decoding) over a byte-level BPE tokenizer.

The handler turns a request into one `TextJob` per prompt; the server's scheduler runs
the jobs' sequences in its continuous-batching decode loop (inference.continuous). A job
turns the loop's sampled tokens into TGI tokens, checks end of text and stop sequences,
and emits stream events or, at the end, the whole generation."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pydantic import ValidationError

from inference.continuous import ContinuousBatcher, Sequence
from inference.errors import ClientError, from_validation_error
from inference.schema import (
    VALID_KEYS,
    Details,
    FinishReason,
    GenerateParameters,
    GenerateRequest,
    Generation,
    StreamDetails,
    StreamEvent,
    Token,
)
from inference.seeds import fresh_seed
from inference.settings import ServingSettings
from training.artifact import Artifact
from training.data.tokenizer import IncrementalDecoder, TextTokenizer
from training.models.decoding import serving_precision, slot_decoder
from training.models.sampling import SampledToken
from training.recipes.transformer import load

DEFAULT_MAX_NEW_TOKENS = 64
_DONE = object()

#: The loop's reasons that end a job, in the words a client reads in finish_reason.
_FINISH = {"length": "length", "deadline": "deadline"}


class GenerationFailed(Exception):
    """A job ended without an answer (the server stopped, or the decode step failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TextJob:
    """One prompt's generation: sampled tokens in, TGI tokens and events out.

    Its callbacks run in the decode loop's thread; ``emit`` receives each stream event
    (streaming jobs only), ``done`` the job once it has ended.
    """

    def __init__(self, handler: TextGenerationHandler, prompt: str,
                 params: GenerateParameters, *, stream: bool,
                 emit: Callable[[dict[str, Any]], None] | None = None,
                 done: Callable[[TextJob], None] | None = None) -> None:
        self.handler, self.prompt, self.params, self.stream = handler, prompt, params, stream
        self.emit, self.done = emit, done
        seed = params.seed
        if params.sampling and seed is None:
            seed = fresh_seed(2**63)  # reported back, to replay it
        self.seed = seed
        self.prompt_ids = handler._prompt_ids(prompt, params)
        self.tokens: list[Token] = []
        self.finish_reason: FinishReason = "length"
        self.failure: str | None = None  # why it ended without an answer
        self._decoder = IncrementalDecoder(handler.tokenizer, self.prompt_ids)
        self._text = ""  # generated text so far, for stop sequences
        self._pending: Token | None = None  # streaming holds one token back

    def sequence(self, *, deadline: float = float("inf"),
                 cancelled: threading.Event | None = None) -> Sequence:
        params = self.params
        budget = self.handler.context_limit - len(self.prompt_ids)
        generator = None
        if params.sampling:
            generator = torch.Generator(device=self.handler.device).manual_seed(self.seed or 0)
        return Sequence(
            prompt=self.prompt_ids,
            max_new_tokens=min(params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, budget),
            on_token=self._on_token, on_finish=self._on_finish,
            temperature=(params.temperature if params.temperature is not None else 1.0)
            if params.sampling else 0.0,
            top_k=params.top_k, top_p=params.top_p,
            repetition_penalty=params.repetition_penalty, generator=generator,
            deadline=deadline, cancelled=cancelled or threading.Event())

    def _on_token(self, sampled: SampledToken) -> bool:
        tokenizer = self.handler.tokenizer
        special = sampled.id == tokenizer.eot_id
        text = "" if special else self._decoder.push(sampled.id)
        token = Token(id=sampled.id, text=text, logprob=sampled.logprob, special=special)
        self.tokens.append(token)
        if special:
            self.finish_reason = "eos_token"
        elif self.params.stop and text:
            # Only the new text can complete a stop sequence: look at the tail.
            self._text += text
            window = self._text[-(max(map(len, self.params.stop)) + len(text)):]
            if any(s and s in window for s in self.params.stop):
                self.finish_reason = "stop_sequence"
        if self.stream and self.emit is not None:
            if self._pending is not None:
                self.emit(StreamEvent(index=len(self.tokens) - 1,
                                      token=self._pending).model_dump())
            self._pending = token
        return self.finish_reason != "length"

    def _on_finish(self, reason: str) -> None:
        if reason in _FINISH:
            self.finish_reason = _FINISH[reason]  # type: ignore[assignment]
        elif reason != "stopped":
            self.failure = reason
        # A last token may end inside a UTF-8 character; give its bytes to the final
        # token, so the token texts always add up to generated_text.
        tail = self._decoder.flush()
        if tail and self.tokens:
            self.tokens[-1].text += tail
        if self.stream and self.emit is not None and self._pending is not None \
                and self.failure is None:
            details = StreamDetails(finish_reason=self.finish_reason,
                                    generated_tokens=len(self.tokens), seed=self.seed)
            self.emit(StreamEvent(index=len(self.tokens), token=self._pending,
                                  generated_text=self.text(), details=details).model_dump())
        if self.done is not None:
            self.done(self)

    def text(self) -> str:
        ids = [t.id for t in self.tokens if not t.special]
        text = self.handler.tokenizer.decode(ids)
        return self.prompt + text if self.params.return_full_text else text

    def generation(self) -> dict[str, Any]:
        """The TGI answer for this prompt (after the job has ended)."""
        details = None
        if self.params.details:
            details = Details(finish_reason=self.finish_reason,
                              generated_tokens=len(self.tokens), seed=self.seed,
                              tokens=self.tokens)
        return Generation(generated_text=self.text(), details=details
                          ).model_dump(exclude_none=True)


class TextGenerationHandler:
    family = "transformer"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings | None = None) -> None:
        self.settings = settings or ServingSettings.from_env()
        model, self.tokenizer = self._load(artifact, device)
        self.model: Any = serving_precision(model, self.settings.precision)
        self.context_limit: int = model.context_limit
        self.device = device
        self._solo: ContinuousBatcher | None = None  # predict()/stream() outside a server
        self._solo_lock = threading.Lock()

    def _load(self, artifact: Artifact, device: str) -> tuple[Any, TextTokenizer]:
        """The model (with `generate()` and `context_limit`) and its tokenizer."""
        lm = load(artifact, device)
        return lm.model, lm.tokenizer

    def probe(self) -> None:
        """A few greedy tokens: what the server times to fit its threads."""
        probe = [self.tokenizer.eot_id] * 4
        for _ in self.model.generate(probe, max_new_tokens=min(8, self.context_limit - 4),
                                     temperature=0.0):
            pass

    def decode_loop(self, slots: int) -> ContinuousBatcher:
        """A continuous-batching decode loop over this handler's model with ``slots`` rows."""
        return ContinuousBatcher(slot_decoder(self.model, slots))

    # --- decode ------------------------------------------------------------------
    def decode(self, payload: Any, accept: str | None = None) -> GenerateRequest:
        if isinstance(payload, str):  # a bare JSON string is a prompt with defaults
            payload = {"inputs": payload}
        try:
            request = GenerateRequest.model_validate(payload)
        except ValidationError as exc:
            raise from_validation_error(exc, valid=VALID_KEYS) from None
        if request.stream and isinstance(request.inputs, list):
            raise ClientError("stream: a list of inputs can't be streamed; send one prompt "
                              "per streamed request or set stream to false")
        prompts = request.inputs if isinstance(request.inputs, list) else [request.inputs]
        if not prompts:
            raise ClientError("inputs: give a prompt or a non-empty list of prompts")
        for prompt in prompts:
            self._prompt_ids(prompt, request.parameters)  # length checks before any work
        return request

    def wants_stream(self, request: GenerateRequest) -> bool:
        return request.stream

    def _prompt_ids(self, prompt: str, params: GenerateParameters) -> list[int]:
        # Training put <|endoftext|> before every document, so it also starts a prompt;
        # an empty prompt then asks for a document from scratch.
        ids = [self.tokenizer.eot_id, *self.tokenizer.encode(prompt)]
        if params.truncate is not None:
            ids = ids[-params.truncate:]
        budget = self.context_limit - len(ids)
        wanted = params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if budget < 1 or (params.max_new_tokens is not None and wanted > budget):
            raise ClientError(
                f"inputs hold {len(ids)} tokens and max_new_tokens is {wanted}; together "
                f"they must fit this model's context of {self.context_limit} tokens: shorten "
                f"the prompt, lower max_new_tokens, or set parameters.truncate")
        return ids

    # --- jobs: what the scheduler runs ---------------------------------------------
    def jobs(self, request: GenerateRequest, *,
             emit: Callable[[dict[str, Any]], None] | None = None,
             done: Callable[[TextJob], None] | None = None) -> list[TextJob]:
        prompts = request.inputs if isinstance(request.inputs, list) else [request.inputs]
        return [TextJob(self, prompt, request.parameters, stream=request.stream, emit=emit,
                        done=done) for prompt in prompts]

    # --- without a server: one request at a time, blocking -------------------------
    def _loop(self) -> ContinuousBatcher:
        with self._solo_lock:
            if self._solo is None:
                self._solo = self.decode_loop(1)
            return self._solo

    def predict(self, request: GenerateRequest) -> list[dict[str, Any]]:
        finished: queue.Queue[TextJob] = queue.Queue()
        jobs = self.jobs(request, done=finished.put)
        for job in jobs:
            self._loop().submit(job.sequence())
        for _ in jobs:
            job = finished.get()
            if job.failure is not None:
                raise GenerationFailed(job.failure)
        return [job.generation() for job in jobs]

    def stream(self, request: GenerateRequest,
               cancelled: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        assert isinstance(request.inputs, str), "decode() refuses streamed lists"
        events: queue.Queue[Any] = queue.Queue()
        [job] = self.jobs(request, emit=events.put, done=lambda _: events.put(_DONE))
        self._loop().submit(job.sequence(deadline=time.monotonic() + 3600,
                                         cancelled=cancelled))
        while (event := events.get()) is not _DONE:
            yield event
        if job.failure is not None:
            raise GenerationFailed(job.failure)
