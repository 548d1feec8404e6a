"""The Messages API: OpenAI's chat and text completions over a text model, as
text-generation-inference offers them (on `/v1/chat/completions`, `/v1/completions`, and on
SageMaker's `/invocations` when the body carries `messages` or `prompt`).

A chat request's messages are rendered into one prompt by the artifact's chat template
(training.models.formats.chat_template), in a sandboxed Jinja environment, as Hugging Face's
tokenizers render theirs. Both kinds then run as TGI requests (inference.schema), and
their answers and stream events are rewritten into OpenAI's shapes here:

    chat        {"id", "object": "chat.completion", "created", "model",
                 "choices": [{"index", "message": {"role", "content"}, "logprobs",
                 "finish_reason"}], "usage": {...}}
    completion  {"id", "object": "text_completion", ..., "choices": [{"index", "text",
                 "logprobs", "finish_reason"}], "usage"}
    streams     `data: {chunk}` events (chat.completion.chunk / text_completion), then
                `data: [DONE]`

OpenAI fields TGI ignores are accepted; those that would change what comes back and
cannot be honoured here (tools, a JSON response format) are refused with a 422 that says
so, rather than answered as if they had been applied.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import ClientError, from_validation_error
from inference.schema import MAX_BEST_OF, MAX_STOP_SEQUENCES, MAX_TOP_N_TOKENS, GenerateParameters

#: TGI's finish reasons in OpenAI's words.
FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length",
          "deadline": "length"}
MAX_MESSAGES = 1024
FINGERPRINT = "genkiln"


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str = Field(min_length=1, max_length=64)
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self, where: str) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for i, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise ClientError(f"{where}.content.{i}: this model reads text only; send "
                                  f"parts of type \"text\" (got {part.type!r})")
            pieces.append(part.text)
        return "".join(pieces)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Common(BaseModel):
    """The fields chat and text completions share."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="ignored: this endpoint serves one model")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=MAX_BEST_OF, description="choices to return")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def parameters(self, *, details: bool = True, top_n: int = 0) -> GenerateParameters:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP_SEQUENCES:
            raise ClientError(f"stop: up to {MAX_STOP_SEQUENCES} stop sequences; got "
                              f"{len(stop)}")
        if self.logit_bias:
            raise ClientError("logit_bias is not supported by this endpoint; drop it")
        # OpenAI samples at temperature 1 unless told 0 (greedy), as TGI's Messages API.
        return GenerateParameters(
            do_sample=self.temperature != 0, temperature=self.temperature or None,
            top_p=self.top_p, max_new_tokens=self.max_completion_tokens or self.max_tokens,
            stop=stop, seed=self.seed, frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty, details=details, top_n_tokens=top_n)

    def seeds(self) -> list[int | None]:
        """Per choice: the given seed plus the choice's index, so n choices differ."""
        count = self.n or 1
        if count > 1 and self.stream:
            raise ClientError("n > 1 cannot be streamed; set stream to false or n to 1")
        return [None if self.seed is None else self.seed + i for i in range(count)]

    @property
    def usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_N_TOKENS)
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def checked(self) -> ChatRequest:
        if self.tools:
            raise ClientError("tools: this model cannot call tools; drop tools and "
                              "tool_choice")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise ClientError(f"response_format {kind!r} needs constrained decoding, which "
                              f"this endpoint does not offer; drop response_format")
        if self.top_logprobs and not self.logprobs:
            raise ClientError("top_logprobs needs logprobs: true")
        return self


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_N_TOKENS)
    best_of: int | None = Field(None, ge=1, le=MAX_BEST_OF)
    suffix: str | None = None

    def checked(self) -> CompletionRequest:
        if self.suffix:
            raise ClientError("suffix (fill in the middle) is not supported by this model; "
                              "drop it")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ClientError("prompt: give a prompt or a non-empty list of prompts")
        if self.best_of is not None and self.best_of > 1:
            raise ClientError("best_of is offered on TGI's routes (parameters.best_of), not "
                              "on completions; drop it")
        return self


def parse_chat(payload: Any) -> ChatRequest:
    try:
        return ChatRequest.model_validate(payload).checked()
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def parse_completion(payload: Any) -> CompletionRequest:
    try:
        return CompletionRequest.model_validate(payload).checked()
    except ValidationError as exc:
        raise from_validation_error(exc) from None


# --- chat templates --------------------------------------------------------------------
@cache
def _compiled(template: str) -> Any:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:  # Hugging Face templates call this
        raise TemplateError(message)

    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template)


def render_chat(template: str, messages: list[ChatMessage], eos_token: str) -> str:
    """The conversation as one prompt, ending where the assistant's answer begins."""
    from jinja2 import TemplateError

    plain = [{"role": m.role, "content": m.text(f"messages.{i}")}
             for i, m in enumerate(messages)]
    try:
        return str(_compiled(template).render(messages=plain, add_generation_prompt=True,
                                              eos_token=eos_token, bos_token=""))
    except TemplateError as exc:
        raise ClientError(f"messages: the model's chat template refused them ({exc})") \
            from None


# --- answers ---------------------------------------------------------------------------
def _logprobs(details: Mapping[str, Any]) -> dict[str, Any]:
    tops = details.get("top_tokens") or []
    content = []
    for i, token in enumerate(details.get("tokens", [])):
        top = tops[i] if i < len(tops) else []
        content.append({"token": token["text"], "logprob": token["logprob"],
                        "bytes": list(token["text"].encode()),
                        "top_logprobs": [{"token": t["text"], "logprob": t["logprob"],
                                          "bytes": list(t["text"].encode())} for t in top]})
    return {"content": content}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class Answer:
    """Turns one request's TGI answers and events into OpenAI's shapes."""

    def __init__(self, kind: Literal["chat", "completion"], model: str, response_id: str,
                 *, logprobs: bool, usage_in_stream: bool = False) -> None:
        self.kind, self.model, self.id = kind, model, response_id
        self.logprobs, self.usage_in_stream = logprobs, usage_in_stream
        self.created = int(time.time())
        self._streamed = 0

    def _head(self, chunk: bool) -> dict[str, Any]:
        obj = {"chat": "chat.completion", "completion": "text_completion"}[self.kind]
        return {"id": self.id, "object": obj + (".chunk" if chunk and self.kind == "chat"
                                                else ""),
                "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT}

    def whole(self, generations: list[dict[str, Any]]) -> dict[str, Any]:
        choices, prompt, completion = [], 0, 0
        for index, generation in enumerate(generations):
            details = generation.get("details", {})
            prompt = max(prompt, details.get("input_length", 0))
            completion += details.get("generated_tokens", 0)
            choice: dict[str, Any] = {"index": index}
            if self.kind == "chat":
                choice["message"] = {"role": "assistant",
                                     "content": generation["generated_text"]}
            else:
                choice["text"] = generation["generated_text"]
            choice["logprobs"] = _logprobs(details) if self.logprobs else None
            choice["finish_reason"] = FINISH.get(details.get("finish_reason", ""), "stop")
            choice["generation_id"] = generation.get("generation_id")
            choice["seed"] = generation.get("seed")
            choices.append(choice)
        return {**self._head(False), "choices": choices, "usage": _usage(prompt, completion),
                "generation_id": generations[0].get("generation_id") if generations else None}

    def chunks(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks one TGI stream event becomes (the last adds finish and usage)."""
        if "error" in event and "token" not in event:
            return [{"error": {"message": event["error"], "type": event.get("error_type"),
                               "code": None}}]
        token = event["token"]
        text = "" if token.get("special") else token["text"]
        final = event.get("details")
        choice: dict[str, Any] = {"index": 0}
        if self.kind == "chat":
            choice["delta"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = None
        if self.logprobs:
            choice["logprobs"] = _logprobs({"tokens": [token],
                                            "top_tokens": [event.get("top_tokens") or []]})
        choice["finish_reason"] = FINISH.get(final["finish_reason"], "stop") if final else None
        chunk = {**self._head(True), "choices": [choice]}
        if final:
            chunk["generation_id"] = event.get("generation_id")
            chunk["seed"] = final.get("seed")
        out = [chunk]
        if final and self.usage_in_stream:
            out.append({**self._head(True), "choices": [],
                        "usage": _usage(final.get("input_length", 0),
                                        final.get("generated_tokens", 0))})
        return out


def model_list(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                        "owned_by": "genkiln"}]}
