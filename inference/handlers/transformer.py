"""Text generation in text-generation-inference's shapes: the Transformer, and any family
whose model offers `generate()` and `context_limit` over a byte-level BPE tokenizer."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import ValidationError

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
from inference.threads import fit_threads
from training.artifact import Artifact
from training.data.tokenizer import IncrementalDecoder, TextTokenizer
from training.recipes.transformer import load

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class _Run:
    """The state of one prompt's generation, filled in as tokens arrive."""

    prompt_ids: list[int]
    seed: int | None
    tokens: list[Token] = field(default_factory=list)
    finish_reason: FinishReason = "length"


class TextGenerationHandler:
    family = "transformer"

    def __init__(self, artifact: Artifact, device: str = "cpu") -> None:
        self.model, self.tokenizer = self._load(artifact, device)
        self.context_limit = self.model.context_limit
        self.device = device
        self.threads = fit_threads(self._decode_probe)

    def _load(self, artifact: Artifact, device: str) -> tuple[Any, TextTokenizer]:
        """The model (with `generate()` and `context_limit`) and its tokenizer."""
        lm = load(artifact, device)
        return lm.model, lm.tokenizer

    def _decode_probe(self) -> None:
        probe = [self.tokenizer.eot_id] * 4
        for _ in self.model.generate(probe, max_new_tokens=min(8, self.context_limit - 4),
                                     temperature=0.0):
            pass

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

    # --- generate ----------------------------------------------------------------
    def _tokens(self, prompt: str, params: GenerateParameters, run: _Run,
                cancelled: threading.Event | None = None) -> Iterator[Token]:
        budget = self.context_limit - len(run.prompt_ids)
        max_new = min(params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, budget)
        generator = None
        if params.sampling:
            generator = torch.Generator(device=self.device).manual_seed(run.seed or 0)
        decoder = IncrementalDecoder(self.tokenizer, run.prompt_ids)
        generated: list[int] = []
        for sampled in self.model.generate(
            run.prompt_ids, max_new_tokens=max_new,
            temperature=(params.temperature if params.temperature is not None else 1.0)
            if params.sampling else 0.0,
            top_k=params.top_k, top_p=params.top_p,
            repetition_penalty=params.repetition_penalty, generator=generator,
        ):
            if cancelled is not None and cancelled.is_set():
                return
            special = sampled.id == self.tokenizer.eot_id
            text = "" if special else decoder.push(sampled.id)
            token = Token(id=sampled.id, text=text, logprob=sampled.logprob, special=special)
            run.tokens.append(token)
            if special:
                run.finish_reason = "eos_token"
            else:
                generated.append(sampled.id)
                if params.stop and any(s and s in self.tokenizer.decode(generated)
                                       for s in params.stop):
                    run.finish_reason = "stop_sequence"
            yield token
            if run.finish_reason != "length":
                break
        # A last token may end inside a UTF-8 character; give its bytes to the final
        # token, so the token texts always add up to generated_text. Streaming holds
        # the final token back until here, so it still carries them.
        tail = decoder.flush()
        if tail and run.tokens:
            run.tokens[-1].text += tail

    def _start(self, prompt: str, params: GenerateParameters) -> _Run:
        seed = params.seed
        if params.sampling and seed is None:
            seed = random.SystemRandom().randrange(2**63)  # reported back, to replay it
        return _Run(prompt_ids=self._prompt_ids(prompt, params), seed=seed)

    def _text(self, prompt: str, params: GenerateParameters, run: _Run) -> str:
        ids = [t.id for t in run.tokens if not t.special]
        text = self.tokenizer.decode(ids)
        return prompt + text if params.return_full_text else text

    def predict(self, request: GenerateRequest) -> list[dict[str, Any]]:
        params = request.parameters
        prompts = request.inputs if isinstance(request.inputs, list) else [request.inputs]
        out = []
        for prompt in prompts:
            run = self._start(prompt, params)
            for _ in self._tokens(prompt, params, run):
                pass
            details = None
            if params.details:
                details = Details(finish_reason=run.finish_reason,
                                  generated_tokens=len(run.tokens), seed=run.seed,
                                  tokens=run.tokens)
            generation = Generation(generated_text=self._text(prompt, params, run),
                                    details=details)
            out.append(generation.model_dump(exclude_none=True))
        return out

    def stream(self, request: GenerateRequest,
               cancelled: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        assert isinstance(request.inputs, str), "decode() refuses streamed lists"
        params = request.parameters
        run = self._start(request.inputs, params)
        pending: Token | None = None
        index = 0
        # Hold one token back: the last event must carry generated_text and details,
        # and we only know a token is last once the generator ends.
        for token in self._tokens(request.inputs, params, run, cancelled):
            if pending is not None:
                index += 1
                yield StreamEvent(index=index, token=pending).model_dump()
            pending = token
        if pending is None:
            return
        details = StreamDetails(finish_reason=run.finish_reason,
                                generated_tokens=len(run.tokens), seed=run.seed)
        yield StreamEvent(index=index + 1, token=pending,
                          generated_text=self._text(request.inputs, params, run),
                          details=details).model_dump()
