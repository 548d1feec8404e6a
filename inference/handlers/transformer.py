"""Text generation in text-generation-inference's shapes: the Transformer, and any family
whose model offers `generate()`, `context_limit` and a slot decoder
(training.models.decoding) over a byte-level BPE tokenizer.

`decode` validates a TGI request and tokenizes its prompts (on the server's intake
threads) into a `TextRequest`; the OpenAI routes build the same from chat messages or
completion prompts (inference.openai_api). The handler turns a TextRequest into one
`TextJob` per sequence (per prompt, times `best_of` or OpenAI's `n`); the server's
scheduler runs the jobs' sequences in its continuous-batching decode loop
(inference.continuous). A job turns the loop's sampled tokens into TGI tokens, checks end
of text and stop sequences, and emits stream events or, at the end, the whole generation;
`collect` assembles a request's answer from its jobs (best_of keeps the likeliest)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ValidationError

from inference.continuous import ContinuousBatcher, Sequence
from inference.errors import ClientError, from_validation_error
from inference.handlers.contract import ContinuousHandler, Description
from inference.schema import (
    BestOfSequence,
    Details,
    FinishReason,
    GenerateParameters,
    GenerateRequest,
    PrefillToken,
    Token,
    known_parameters,
)
from inference.seeds import MAX_PICKED_SEED, fresh_seed
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.decoding import serving_precision, slot_decoder
from training.models.formats.chat_template import CHAT_TEMPLATE_FILE, DEFAULT_CHAT_TEMPLATE
from training.models.formats.tokenizer import IncrementalDecoder, TextTokenizer
from training.models.sampling import SampledToken
from training.models.transformer import from_artifact

DEFAULT_MAX_NEW_TOKENS = 64

#: The loop's reasons that end a job, in the words a client reads in finish_reason.
_FINISH = {"length": "length", "deadline": "deadline"}


@dataclass
class TextRequest:
    """A validated, tokenized text request: one entry per sequence to generate."""

    params: GenerateParameters
    prompts: list[str]
    prompt_ids: list[list[int]]
    #: per prompt: the seed it samples with (None: a fresh one when sampling, none when
    #: greedy)
    seeds: list[int | None]
    stream: bool = False
    #: parameter names this server does not know, which it ignored (as TGI does)
    ignored: list[str] = field(default_factory=list)
    #: per prompt, when decoder_input_details asked for them: its tokens' log-probs
    prefill: list[list[PrefillToken]] | None = None

    @property
    def best_of(self) -> int:
        return self.params.best_of or 1


class TextJob:
    """One sequence's generation: sampled tokens in, TGI tokens and events out.

    Its callbacks run in the decode loop's thread; ``emit`` receives each stream event
    (streaming jobs only), ``done`` the job once it has ended.
    """

    def __init__(self, handler: TextGenerationHandler, prompt: str, prompt_ids: list[int],
                 params: GenerateParameters, *, seed: int | None, stream: bool,
                 prefill: list[PrefillToken] | None = None,
                 emit: Callable[[dict[str, Any]], None] | None = None,
                 done: Callable[[TextJob], None] | None = None) -> None:
        self.handler, self.prompt, self.params, self.stream = handler, prompt, params, stream
        self.emit, self.done = emit, done
        if params.sampling and seed is None:
            seed = fresh_seed(MAX_PICKED_SEED)  # reported back, to replay it
        self.seed = seed if params.sampling else None  # greedy answers report no seed
        self.prompt_ids = prompt_ids
        self.prefill = prefill or []
        self.tokens: list[Token] = []
        self.top_tokens: list[list[Token]] = []
        self.finish_reason: FinishReason = "length"
        self.failure: str | None = None  # why it ended without an answer
        self._decoder = IncrementalDecoder(handler.tokenizer, prompt_ids)
        self._pending: dict[str, Any] | None = None  # streaming holds one event back

    @property
    def logprob(self) -> float:
        """The generation's total log-probability: what best_of ranks by."""
        return sum(t.logprob for t in self.tokens)

    def sequence(self, *, deadline: float = float("inf"),
                 cancelled: threading.Event | None = None) -> Sequence:
        params = self.params
        budget = self.handler.context_limit - len(self.prompt_ids)
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=self.handler.device).manual_seed(self.seed)
        return Sequence(
            prompt=self.prompt_ids,
            max_new_tokens=min(params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS, budget),
            on_token=self._on_token, on_finish=self._on_finish,
            temperature=(params.temperature if params.temperature is not None else 1.0)
            if params.sampling else 0.0,
            top_k=params.top_k, top_p=params.top_p, typical_p=params.typical_p,
            repetition_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            watermark=params.watermark, top_n=params.top_n_tokens or 0,
            generator=generator, deadline=deadline, cancelled=cancelled or threading.Event())

    def _token(self, token_id: int, logprob: float, text: str | None = None) -> Token:
        special = token_id == self.handler.tokenizer.eot_id
        if text is None:
            text = "" if special else self.handler.piece(token_id)
        return Token(id=token_id, text=text, logprob=logprob, special=special)

    def _on_token(self, sampled: SampledToken) -> bool:
        special = sampled.id == self.handler.tokenizer.eot_id
        token = self._token(sampled.id, sampled.logprob,
                            "" if special else self._decoder.push(sampled.id))
        self.tokens.append(token)
        top = [self._token(i, lp) for i, lp in sampled.top]
        self.top_tokens.append(top)
        if special:
            self.finish_reason = "eos_token"
        elif self.params.stop and token.text:
            # Only the new text can complete a stop sequence: look at the tail.
            text = self._decoder.text
            window = text[-(max(map(len, self.params.stop)) + len(token.text)):]
            if any(s and s in window for s in self.params.stop):
                self.finish_reason = "stop_sequence"
        if self.stream and self.emit is not None:
            if self._pending is not None:
                self.emit(self._pending)
            self._pending = self._event(token, top)
        return self.finish_reason != "length"

    def _event(self, token: Token, top: list[Token]) -> dict[str, Any]:
        event: dict[str, Any] = {"index": len(self.tokens), "token": token.model_dump()}
        if self.params.top_n_tokens:
            event["top_tokens"] = [t.model_dump() for t in top]
        event["generated_text"] = None
        event["details"] = None
        return event

    def _on_finish(self, reason: str) -> None:
        if reason in _FINISH:
            self.finish_reason = _FINISH[reason]  # type: ignore[assignment]
        elif reason != "stopped":
            self.failure = reason
        self._decoder.flush()  # an unfinished character at the end is dropped
        if self.stream and self.emit is not None and self._pending is not None \
                and self.failure is None:
            final = self._pending
            final["generated_text"] = self.text()
            final["details"] = {"finish_reason": self.finish_reason,
                                "generated_tokens": len(self.tokens), "seed": self.seed,
                                "input_length": len(self.prompt_ids)}
            self.emit(final)
        if self.done is not None:
            self.done(self)

    def text(self) -> str:
        """The generated text: the tokens' texts, end to end."""
        text = self._decoder.text
        return self.prompt + text if self.params.return_full_text else text

    def details(self) -> Details:
        return Details(finish_reason=self.finish_reason, generated_tokens=len(self.tokens),
                       seed=self.seed, input_length=len(self.prompt_ids),
                       prefill=self.prefill, tokens=self.tokens,
                       top_tokens=self.top_tokens if self.params.top_n_tokens else None)

    def generation(self, others: list[TextJob] | None = None) -> dict[str, Any]:
        """The TGI answer for this sequence (after it has ended); ``others``: the best_of
        sequences it beat. `seed` rides along for the server's records."""
        answer: dict[str, Any] = {"generated_text": self.text()}
        if self.params.details:
            details = self.details()
            if self.params.best_of and self.params.best_of > 1:
                details.best_of_sequences = [BestOfSequence(
                    generated_text=o.text(), finish_reason=o.finish_reason,
                    generated_tokens=len(o.tokens), seed=o.seed, prefill=o.prefill,
                    tokens=o.tokens, top_tokens=o.top_tokens if o.params.top_n_tokens
                    else None) for o in others or []]
            answer["details"] = _without_empty(details.model_dump())
        answer["seed"] = self.seed
        return answer


def _without_empty(details: dict[str, Any]) -> dict[str, Any]:
    """TGI's details: its optional lists only when asked for; every other field, null or
    not, always there (a greedy answer's seed is null)."""
    for key in ("top_tokens", "best_of_sequences"):
        if details.get(key) is None:
            details.pop(key, None)
    for sequence in details.get("best_of_sequences", []):
        if sequence.get("top_tokens") is None:
            sequence.pop("top_tokens")
    return details


class TextGenerationHandler(ContinuousHandler):
    family = "transformer"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        self.settings = settings
        model, self.tokenizer = self._load(artifact, device)
        self.model: Any = serving_precision(model, self.settings.precision)
        self.context_limit: int = model.context_limit
        self.device = device
        self.chat_template = (artifact.path(CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
                              if CHAT_TEMPLATE_FILE in artifact.manifest.get("files", {})
                              else DEFAULT_CHAT_TEMPLATE)
        self._longest = self.tokenizer.longest_token()

    def _load(self, artifact: Artifact, device: str) -> tuple[Any, TextTokenizer]:
        """The model (with `generate()` and `context_limit`) and its tokenizer."""
        lm = from_artifact(artifact, device)
        return lm.model, lm.tokenizer

    def probe(self) -> None:
        """A few greedy tokens: what the server times to fit its threads."""
        probe = [self.tokenizer.eot_id] * 4
        for _ in self.model.generate(probe, max_new_tokens=min(8, self.context_limit - 4),
                                     temperature=0.0):
            pass

    def smoke_request(self) -> dict[str, Any]:
        """A few sampled tokens: what a deployment's smoke test sends."""
        return {"inputs": "The", "parameters": {"max_new_tokens": 4, "do_sample": True,
                                                "seed": 1}}

    def decode_loop(self, slots: int) -> ContinuousBatcher:
        """A continuous-batching decode loop over this handler's model with ``slots`` rows."""
        return ContinuousBatcher(slot_decoder(self.model, slots))

    def piece(self, token_id: int) -> str:
        """One token's text on its own (a split character shows as U+FFFD here)."""
        return self.tokenizer.decode([token_id])

    # --- decode ------------------------------------------------------------------
    def decode(self, payload: Any, accept: str | None = None) -> TextRequest:
        if isinstance(payload, str):  # a bare JSON string is a prompt with defaults
            payload = {"inputs": payload}
        if not isinstance(payload, dict):
            raise ClientError('send a JSON object such as {"inputs": "Once upon a time", '
                              '"parameters": {"max_new_tokens": 20}}, or a chat as '
                              '{"messages": [{"role": "user", "content": "Hello"}]}')
        try:
            request = GenerateRequest.model_validate(payload)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        prompts = request.inputs if isinstance(request.inputs, list) else [request.inputs]
        if request.stream and isinstance(request.inputs, list):
            raise ClientError("stream: a list of inputs can't be streamed; send one prompt "
                              "per streamed request or set stream to false")
        if not prompts:
            raise ClientError("inputs: give a prompt or a non-empty list of prompts")
        raw = payload.get("parameters") if isinstance(payload, dict) else None
        ignored = sorted(set(raw) - set(known_parameters())) if isinstance(raw, dict) else []
        return self.text_request(prompts, request.parameters, stream=request.stream,
                                 ignored=ignored)

    def text_request(self, prompts: list[str], params: GenerateParameters, *,
                     stream: bool, seeds: list[int | None] | None = None,
                     ignored: list[str] | None = None, field: str = "inputs") -> TextRequest:
        """Check ``params`` against TGI's rules and this model, tokenize ``prompts``."""
        limit = self.settings.max_prompts
        if len(prompts) > limit:
            raise ClientError(f"{field} holds {len(prompts):,} prompts; this server takes at "
                              f"most {limit} per request (GENKILN_MAX_PROMPTS_PER_REQUEST): "
                              f"send them in several requests")
        if stream and len(prompts) != 1:
            raise ClientError(f"{field}: a list of prompts can't be streamed; send one prompt "
                              f"per streamed request or set stream to false")
        best_of = params.best_of or 1
        if best_of > 1:
            if not params.sampling:
                raise ClientError("parameters.best_of: you must use sampling when best_of "
                                  "is > 1 (set do_sample, or a temperature, top_k or top_p)")
            if params.seed is not None:
                raise ClientError("parameters.seed must not be set when best_of > 1: each "
                                  "of the best_of sequences samples with its own seed")
            if stream:
                raise ClientError("parameters.best_of > 1 is not supported when streaming "
                                  "tokens; set stream to false")
        if params.decoder_input_details and stream:
            raise ClientError("parameters.decoder_input_details is not supported when "
                              "streaming tokens; set stream to false")
        if params.grammar is not None:
            raise ClientError("parameters.grammar: grammar is not supported by this "
                              "endpoint; drop it and validate the output yourself")
        if params.adapter_id is not None:
            raise ClientError(f"parameters.adapter_id: this endpoint serves no LoRA "
                              f"adapters ({params.adapter_id!r}); drop adapter_id")
        ids = [self._prompt_ids(prompt, params, field) for prompt in prompts]
        if seeds is None:
            seeds = [params.seed] * len(prompts)
        prefill = [self.prefill(p) for p in ids] if params.decoder_input_details else None
        return TextRequest(params=params, prompts=list(prompts), prompt_ids=ids, seeds=seeds,
                           stream=stream, ignored=ignored or [], prefill=prefill)

    def _prompt_ids(self, prompt: str, params: GenerateParameters,
                    field: str = "inputs") -> list[int]:
        # Training put <|endoftext|> before every document, so it also starts a prompt;
        # an empty prompt then asks for a document from scratch.
        wanted = params.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        shorten = ("send fewer or shorter messages, or lower max_tokens" if field == "messages"
                   else "shorten the prompt, lower max_new_tokens, or set parameters.truncate")
        if params.truncate is None and len(prompt) > self.context_limit * self._longest:
            # No tokenization can make this fit: refuse it without spending the time.
            raise ClientError(
                f"{field} holds {len(prompt):,} characters, more than this model's context "
                f"of {self.context_limit} tokens can hold: {shorten}")
        ids = [self.tokenizer.eot_id, *self._encode(prompt, params.truncate)]
        if params.truncate is not None:
            ids = ids[-params.truncate:]
        budget = self.context_limit - len(ids)
        if budget < 1 or (params.max_new_tokens is not None and wanted > budget):
            raise ClientError(
                f"{field} hold {len(ids)} tokens and max_new_tokens is {wanted}; together "
                f"they must fit this model's context of {self.context_limit} tokens: "
                f"{shorten}")
        return ids

    def _encode(self, prompt: str, keep: int | None) -> list[int]:
        """The prompt's tokens (all of them, or at least its last ``keep``). The batch
        call releases the GIL, so a long prompt never holds up the server's other threads;
        a long prompt cut to its last tokens is tokenized from a word boundary near its
        end, far enough back that the tokens kept are the ones the whole would give."""
        if keep is not None:
            span = (keep + 64) * self._longest
            if len(prompt) > 2 * span:
                tail = prompt[-span:]
                cut = next((i for i, c in enumerate(tail[: span // 2]) if c.isspace()), None)
                if cut is not None:
                    return self.tokenizer.encode_batch([tail[cut:]])[0][-keep:]
        return self.tokenizer.encode_batch([prompt])[0]

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> list[PrefillToken]:
        """Each prompt token with its log-probability given the ones before it (TGI's
        decoder_input_details); the first has none."""
        idx = torch.tensor([ids], device=self.device)
        logits = self.model(idx, idx)[0][0].float()  # (T, vocab): both families' forward
        logprobs = F.log_softmax(logits[:-1], dim=-1).gather(1, idx[0, 1:, None])[:, 0]
        values: list[float | None] = [None, *logprobs.tolist()]
        return [PrefillToken(id=i, text=self.piece(i), logprob=None if v is None or
                             not math.isfinite(v) else v) for i, v in zip(ids, values,
                                                                         strict=True)]

    def request_models(self) -> list[type[BaseModel]]:
        from inference.openai_api import ChatRequest, CompletionRequest

        return [GenerateRequest, ChatRequest, CompletionRequest]

    def describe(self) -> Description:
        """The playground streams a continuation of the person's text, leaving room for
        the prompt in a small model's context."""
        return Description(context_limit=self.context_limit, playground={
            "input": "text", "input_field": "inputs", "stream": True, "output": "text",
            "template": {"parameters": {"max_new_tokens": min(64, self.context_limit // 2),
                                        "temperature": 0.9, "top_k": 50}}})

    def wants_stream(self, request: TextRequest) -> bool:
        return request.stream

    # --- jobs: what the scheduler runs ---------------------------------------------
    def jobs(self, request: TextRequest, *,
             emit: Callable[[dict[str, Any]], None] | None = None,
             done: Callable[[TextJob], None] | None = None) -> list[TextJob]:
        """best_of jobs per prompt, prompt by prompt."""
        return [TextJob(self, prompt, ids, request.params, seed=seed, stream=request.stream,
                        prefill=request.prefill[i] if request.prefill else None, emit=emit,
                        done=done)
                for i, (prompt, ids, seed) in enumerate(zip(
                    request.prompts, request.prompt_ids, request.seeds, strict=True))
                for _ in range(request.best_of)]

    def collect(self, request: TextRequest, jobs: list[TextJob]) -> list[dict[str, Any]]:
        """One answer per prompt: of its best_of jobs, the likeliest, with the rest in
        details.best_of_sequences."""
        n = request.best_of
        answers = []
        for start in range(0, len(jobs), n):
            group = jobs[start:start + n]
            best = max(group, key=lambda job: job.logprob)
            answers.append(best.generation([j for j in group if j is not best]))
        return answers

    # --- without a server (ContinuousHandler's solo loop) -------------------------
    def stream(self, request: TextRequest,
               cancelled: threading.Event | None = None) -> Iterator[dict[str, Any]]:
        assert len(request.prompts) == 1, "decode() refuses streamed lists"
        return super().stream(request, cancelled)
