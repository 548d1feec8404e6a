"""Generation ids, seeds and records: what lets a person's judgement point at an output.

The server calls three things around a family's handler, whatever the family:

    begin(family, payload, headers)  before decoding: the generation id(s) (the caller's
                                     `X-Amzn-SageMaker-Inference-Id`, validated, or new
                                     ones) and a seed when the caller gave none, written
                                     into the payload so the handler uses it
    pending.finish(result)           after predicting: the id, seed and parameters added
                                     to the answer, and one GenerationRecord per output
    pending.finish_event(event)      the same for the final event of a stream

and `record(store, records)` to keep them. A feedback request (`{"feedback": {...}}`) is
answered by `accept_feedback`, which checks that the generations it names are known.

Text families get the id in TGI's shapes as an extra field (`generation_id` beside
`generated_text`, in each list item and in the final stream event); other families get it
in their JSON object. Every answer also carries it in the `X-Genkiln-Generation-Id` header
and in `X-Amzn-SageMaker-Custom-Attributes` (the one response header SageMaker passes on,
so an image/png or audio/midi answer through an endpoint still names its generation).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inference.errors import ClientError
from inference.seeds import fresh_seed
from training.feedback import (
    FeedbackConflict,
    FeedbackError,
    GenerationRecord,
    check_id,
    feedback_from_json,
)

INFERENCE_ID_HEADER = "x-amzn-sagemaker-inference-id"
GENERATION_ID_HEADER = "X-Genkiln-Generation-Id"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
#: Payload fields that are the generation's inputs; everything else is a parameter.
INPUT_FIELDS = ("inputs", "primer", "primer_midi", "melody", "melody_midi", "image", "images")
#: Seeds the server picks fit in a JavaScript number, so a browser can send them back.
MAX_PICKED_SEED = 2**53 - 1


def is_feedback(payload: Any) -> bool:
    return isinstance(payload, dict) and "feedback" in payload


def is_info(payload: Any) -> bool:
    return isinstance(payload, dict) and set(payload) == {"info"}


def _new_id() -> str:
    return f"gen-{uuid.uuid4().hex}"


@dataclass
class Pending:
    """One invocation between its start and its answer."""

    family: str
    kind: str
    payload: Any  # what the handler decodes: the caller's, with the seed filled in
    ids: list[str]
    inputs: list[Any]  # one per generation
    parameters: dict[str, Any]
    records: list[GenerationRecord] = field(default_factory=list)

    @property
    def seed(self) -> int | None:
        seed = self.parameters.get("seed")
        return seed if isinstance(seed, int) else None

    def headers(self) -> dict[str, str]:
        joined = ",".join(self.ids)
        return {GENERATION_ID_HEADER: joined,
                CUSTOM_ATTRIBUTES_HEADER: f"generation_id={joined}"}

    def _stamp(self, item: dict[str, Any], generation_id: str) -> dict[str, Any]:
        return {**item, "generation_id": generation_id, "seed": self.seed,
                "parameters": self.parameters}

    def _keep(self, index: int, output: Mapping[str, Any]) -> None:
        self.records.append(GenerationRecord(
            generation_id=self.ids[index], family=self.family, kind=self.kind,
            inputs=self.inputs[index], parameters=self.parameters, output=dict(output)))

    def finish(self, result: Any, media_type: str | None = None) -> Any:
        """The answer with ids added; fills `records`. `media_type` marks a binary body."""
        if media_type is not None:
            encoded = base64.b64encode(result).decode("ascii")
            key = "midi_base64" if "midi" in media_type else "png_base64"
            self._keep(0, {key: encoded})
            return result
        if isinstance(result, list):  # TGI: one item per prompt
            stamped = []
            for i, item in enumerate(result):
                if isinstance(item, dict):
                    self._keep(i, output_of(item))
                    item = self._stamp(item, self.ids[i])
                stamped.append(item)
            return stamped
        if isinstance(result, dict):
            self._keep(0, output_of(result))
            return self._stamp(result, self.ids[0])
        return result

    def finish_event(self, event: Any) -> Any:
        """A stream event; the final one (with generated_text) gets the id and a record."""
        if isinstance(event, dict) and event.get("generated_text") is not None:
            self._keep(0, {"text": event["generated_text"]})
            return self._stamp(event, self.ids[0])
        return event


def output_of(item: Mapping[str, Any]) -> dict[str, Any]:
    """What a generation produced, in GenerationRecord's output shape."""
    if isinstance(item.get("generated_text"), str):
        return {"text": item["generated_text"]}
    for key in ("midi_base64", "midi"):
        if isinstance(item.get(key), str):
            return {"midi_base64": item[key]}
    images = item.get("images")
    if isinstance(images, list) and images and isinstance(images[0], str):
        # Several images make one generation; the first is png_base64 as the contract
        # says, all of them are kept beside it.
        return {"png_base64": images[0], **({"images": images} if len(images) > 1 else {})}
    if isinstance(item.get("png_base64"), str):
        return {"png_base64": item["png_base64"]}
    return {"json": {k: v for k, v in item.items() if k not in ("seed", "kind")}}


def _kind(family: str, payload: dict[str, Any], default_kind: str | None) -> str:
    kind = payload.get("kind")
    if isinstance(kind, str):
        return kind
    if "inputs" in payload:
        return "generate"
    return default_kind or "generate"


def begin(family: str, payload: Any, headers: Mapping[str, str], *,
          default_kind: str | None = None, text: bool = False) -> Pending:
    """Ids and a seed for the generation(s) `payload` asks for (ClientError if the given
    id is malformed). `text`: the handler takes TGI's shapes, where the seed is among
    the parameters (so a malformed request is not told about a seed it never sent)."""
    given = headers.get(INFERENCE_ID_HEADER)
    if given is not None:
        try:
            check_id(given, "the X-Amzn-SageMaker-Inference-Id header")
        except FeedbackError as exc:
            raise ClientError(f"{exc}; or leave the header out and the server picks an id",
                              status=400) from None
    if isinstance(payload, str):  # a bare prompt
        payload = {"inputs": payload}
    if not isinstance(payload, dict):
        # Not a request any handler takes; let the handler's decode say what to send.
        return Pending(family, "generate", payload, [given or _new_id()], [payload], {})
    payload = copy.deepcopy(payload)
    seed_holder: Any = payload
    if text or "inputs" in payload:  # text: TGI keeps the seed among the parameters
        if payload.get("parameters") is None and "inputs" in payload:
            payload["parameters"] = {}
        seed_holder = payload.get("parameters")
    if isinstance(seed_holder, dict) and seed_holder.get("seed") is None:
        seed_holder["seed"] = fresh_seed(MAX_PICKED_SEED)

    inputs = payload.get("inputs")
    if isinstance(inputs, list):  # several prompts, several generations
        count = max(1, len(inputs))
        per_input: list[Any] = list(inputs) or [None]
    else:
        count = 1
        per_input = [inputs if "inputs" in payload else
                     {k: payload[k] for k in INPUT_FIELDS if k in payload}]
    if given is not None:
        ids = [given] if count == 1 else [f"{given}-{i}" for i in range(count)]
    else:
        ids = [_new_id() for _ in range(count)]
    if "inputs" in payload:
        parameters = dict(payload["parameters"]) if isinstance(payload["parameters"], dict) \
            else {}
    else:
        parameters = {k: v for k, v in payload.items()
                      if k not in INPUT_FIELDS and k not in ("kind", "stream")}
    return Pending(family=family, kind=_kind(family, payload, default_kind), payload=payload,
                   ids=ids, inputs=per_input, parameters=parameters)


# --- feedback requests -----------------------------------------------------------------
def _feedback_id(body: Mapping[str, Any]) -> str:
    """Without a feedback_id, the judgement's content names it: a retry is the same record."""
    canonical = json.dumps({k: body.get(k) for k in
                            ("generation_id", "rating", "chosen", "rejected", "comment")},
                           sort_keys=True)
    return "fb-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def accept_feedback(store: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and store a feedback request; the answer is the same for a retry."""
    if store is None:
        raise ClientError("feedback capture is off on this server (GENKILN_FEEDBACK=off); "
                          "start it with a feedback store (GENKILN_FEEDBACK_DIR or "
                          "GENKILN_FEEDBACK_URI) to record judgements", status=409,
                          error_type="feedback")
    extra = sorted(set(payload) - {"feedback"})
    if extra:
        raise ClientError(f"a feedback request holds only 'feedback'; drop "
                          f"{', '.join(extra)}")
    body = payload["feedback"]
    if not isinstance(body, dict):
        raise ClientError('feedback must be an object such as {"generation_id": "...", '
                          '"rating": 5} or {"chosen": "...", "rejected": "..."}')
    body = dict(body)
    if "created" in body:
        raise ClientError("feedback.created is set by the server; drop it")
    if body.get("feedback_id") is None:
        body["feedback_id"] = _feedback_id(body)
    try:
        record = feedback_from_json(body)
    except (FeedbackError, TypeError) as exc:
        raise ClientError(f"feedback: {exc}") from None
    for name in ("generation_id", "chosen", "rejected"):
        generation_id = getattr(record, name)
        if generation_id is not None and store.get_generation(generation_id) is None:
            raise ClientError(
                f"feedback.{name}: no generation {generation_id!r} is recorded here; use "
                f"the generation_id that a generation's answer carries (body field "
                f"generation_id, or the {GENERATION_ID_HEADER} header)", status=404,
                error_type="feedback")
    try:
        store.put(record)
    except FeedbackConflict:
        raise ClientError(f"feedback_id {record.feedback_id!r} already holds a different "
                          f"judgement; send a new feedback_id", status=409,
                          error_type="feedback") from None
    answer = {k: v for k, v in body.items() if v is not None}
    return {"status": "recorded", "feedback": answer}
