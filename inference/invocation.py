"""One invocation, from a parsed body to the bytes of its answer.

`prepare` runs on the server's intake threads (never the event loop): it tells what the
body asks for and of which API (a judgement, /info, TGI's generate, OpenAI's chat or text
completions, a family's own kinds), validates and tokenizes it, and names the
generation(s) it will make. The scheduler then runs the prepared request; `whole` and
`stream_lines` turn its result or events into the API's answer:

    TGI       [{"generated_text", "details", "generation_id", ...}]  (/generate: one object)
              streams as server-sent events `data:{...}`, or JSON lines when the client
              asks for application/jsonlines
    OpenAI    chat.completion / text_completion objects; streams as `data: {chunk}` events
              ending with `data: [DONE]`
    families  their JSON object, or a PNG or MIDI body (inference.handlers)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inference import capture, openai_api
from inference.errors import ClientError
from inference.handlers import Handler
from inference.handlers.transformer import TextGenerationHandler
from training.models.formats.tokenizer import END_OF_TEXT

JSON_LINES = "application/jsonlines"
EVENT_STREAM = "text/event-stream"
OPENAI_DONE = b"data: [DONE]\n\n"
#: Parameter names shown in the X-Genkiln-Ignored-Parameters header, at most.
MAX_NAMED = 8
IGNORED_HEADER = "X-Genkiln-Ignored-Parameters"


class Route(StrEnum):
    """Which endpoint the body came to: each API reads and answers in its own shape."""

    INVOCATIONS = "invocations"  # SageMaker's: every kind of body, told apart by its keys
    GENERATE = "generate"  # TGI's /generate: one prompt, one JSON object
    GENERATE_STREAM = "generate_stream"  # TGI's /generate_stream: always streamed
    CHAT = "chat"  # /v1/chat/completions
    COMPLETION = "completion"  # /v1/completions


class Shape(StrEnum):
    TGI = "tgi"
    TGI_ONE = "tgi_one"
    CHAT = "chat"
    COMPLETION = "completion"
    FAMILY = "family"


@dataclass
class Prepared:
    """A generation request ready for the scheduler."""

    shape: Shape | None = None
    pending: capture.Pending | None = None
    decoded: Any = None
    stream: bool = False
    accept: str | None = None
    openai: openai_api.Answer | None = None
    ignored: list[str] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        headers = self.pending.headers() if self.pending is not None else {}
        if self.ignored:
            named = [n for n in self.ignored if n.isascii() and n.isprintable()
                     and len(n) <= 64][:MAX_NAMED]
            more = len(self.ignored) - len(named)
            headers[IGNORED_HEADER] = ", ".join(named) + (f" (+{more} more)" if more else "")
        return headers


def shape_of(payload: Any, route: Route, text: bool) -> Shape:
    """TGI's order on /invocations: `inputs` is a generate request, `messages` a chat,
    `prompt` a text completion; a family's own kinds otherwise."""
    if route == Route.CHAT:
        return Shape.CHAT
    if route == Route.COMPLETION:
        return Shape.COMPLETION
    if route in (Route.GENERATE, Route.GENERATE_STREAM):
        return Shape.TGI_ONE
    if isinstance(payload, dict) and "inputs" not in payload:
        if "messages" in payload:
            return Shape.CHAT
        if "prompt" in payload and text:
            return Shape.COMPLETION
    return Shape.TGI if text else Shape.FAMILY


def prepare(handler: Handler, payload: Any, headers: Mapping[str, str], route: Route, *,
            store: Any, model_id: str) -> Prepared:
    """Validate and name what ``payload`` asks of ``handler`` (ClientError if it can't)."""
    accept = headers.get("accept")
    text = isinstance(handler, TextGenerationHandler)
    shape = shape_of(payload, route, text)
    if shape in (Shape.CHAT, Shape.COMPLETION) and not text:
        raise ClientError(f"this {handler.family} model does not take "
                          f"{'chat messages' if shape == Shape.CHAT else 'text prompts'}: "
                          f"send its own request kinds (GET /info shows them)")
    if shape == Shape.FAMILY:
        pending = capture.begin(handler.family, payload, headers,
                                default_kind=next(iter(handler.describe().kinds), None))
        pending.model = model_id
        pending.reconcile(store)
        if pending.replay_seed is not None:
            pending.payload["seed"] = pending.replay_seed
        decoded = handler.decode(pending.payload, accept)
        return Prepared(shape=shape, pending=pending, decoded=decoded,
                        stream=handler.wants_stream(decoded), accept=accept)
    assert isinstance(handler, TextGenerationHandler)
    answer = None
    if shape == Shape.CHAT:
        chat = openai_api.parse_chat(payload)
        prompt = openai_api.render_chat(handler.chat_template, chat.messages, END_OF_TEXT)
        top = (chat.top_logprobs or 0) if chat.logprobs else 0
        seeds = chat.seeds()
        request = handler.text_request([prompt] * len(seeds),
                                       chat.parameters(top_n=top), stream=chat.stream,
                                       seeds=seeds, field="messages")
        answer = openai_api.Answer("chat", model_id, "", logprobs=bool(chat.logprobs),
                                   usage_in_stream=chat.usage_in_stream)
        kind = "chat"
    elif shape == Shape.COMPLETION:
        completion = openai_api.parse_completion(payload)
        prompts = completion.prompt if isinstance(completion.prompt, list) \
            else [completion.prompt]
        seeds = completion.seeds()
        params = completion.parameters(top_n=completion.logprobs or 0)
        params.return_full_text = completion.echo
        request = handler.text_request([p for p in prompts for _ in seeds], params,
                                       stream=completion.stream,
                                       seeds=seeds * len(prompts), field="prompt")
        answer = openai_api.Answer("completion", model_id, "",
                                   logprobs=completion.logprobs is not None,
                                   usage_in_stream=completion.usage_in_stream)
        kind = "completion"
    else:
        request = handler.decode(payload, accept)
        if route == Route.GENERATE_STREAM:
            request.stream = True
        elif route == Route.GENERATE:
            request.stream = False
        if shape == Shape.TGI_ONE and len(request.prompts) != 1:
            raise ClientError("inputs: this route takes one prompt; send a list to "
                              "/invocations")
        kind = "generate"
    pending = capture.begin_text(handler.family, request.prompts,
                                 request.params.model_dump(exclude_defaults=True), headers,
                                 kind=kind)
    pending.model = model_id
    pending.reconcile(store)
    if pending.replay_seed is not None:
        request.seeds[0] = pending.replay_seed
    if answer is not None:
        answer.id = pending.base
    return Prepared(shape=shape, pending=pending, decoded=request, stream=request.stream,
                    accept=accept, openai=answer, ignored=request.ignored)


def whole(prepared: Prepared, result: Any) -> Any:
    """The JSON answer of a finished (non-streamed) generation; fills the records."""
    assert prepared.pending is not None
    stamped = prepared.pending.finish(result)
    if prepared.shape == Shape.TGI_ONE:
        return stamped[0]
    if prepared.openai is not None:
        return prepared.openai.whole(stamped)
    return stamped


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Framing:
    """How a stream's events are written: SSE for every client that asks for nothing
    else (TGI answers every stream so), JSON lines when asked; OpenAI's shapes and its
    closing `[DONE]` for the OpenAI routes."""

    def __init__(self, prepared: Prepared) -> None:
        self.openai = prepared.openai
        accept = (prepared.accept or "").lower()
        self.lines = self.openai is None and JSON_LINES in accept \
            and EVENT_STREAM not in accept
        self.media_type = JSON_LINES if self.lines else EVENT_STREAM

    def event(self, event: Any) -> bytes:
        if self.openai is not None:
            return b"".join(b"data: " + dumps(chunk) + b"\n\n"
                            for chunk in self.openai.chunks(event))
        if self.lines:
            return dumps(event) + b"\n"
        return b"data:" + dumps(event) + b"\n\n"

    def end(self) -> bytes:
        return OPENAI_DONE if self.openai is not None else b""
