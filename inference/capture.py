"""Generation ids, seeds and records: what lets a person's judgement point at an output.

The server calls these around a family's handler, whatever the family (on its intake
threads, never on the event loop):

    begin(family, payload, headers)  before a family handler decodes: the generation id(s)
                                     (the caller's `X-Amzn-SageMaker-Inference-Id`,
                                     validated, or new ones) and a seed when the caller
                                     gave none, written into the payload
    begin_text(family, request, ...) the same for a decoded text request: one id per prompt;
                                     seeds are the text jobs' own (none when greedy)
    pending.reconcile(store)         a caller's id that names a recorded generation: the
                                     same request again replays it (same seed, same
                                     output), any other request is refused with 409
    pending.finish(result)           after predicting: the id, seed and parameters added
                                     to the answer, and one GenerationRecord per output
    pending.finish_event(event)      the same for the final event of a stream

A feedback request (`{"feedback": {...}}`) is answered by `accept_feedback`, which checks
that the generations it names are known.

Text families get the id in TGI's shapes as an extra field (`generation_id` beside
`generated_text`, in each list item and in the final stream event); other families get it
in their JSON object. Every answer also names it in the `X-Genkiln-Generation-Id` header
and in `X-Amzn-SageMaker-Custom-Attributes` (the one response header SageMaker passes on,
so an image/png or audio/midi answer through an endpoint still names its generation).
Headers stay short whatever the request: n generations of one request share a base id,
`<base>-0` to `<base>-<n-1>`, and the headers carry `<base>-{0..n-1}`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inference.errors import ClientError
from inference.seeds import MAX_PICKED_SEED, fresh_seed
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
INPUT_FIELDS = ("inputs", "prompt", "primer", "primer_midi", "melody", "melody_midi", "image",
                "images")


def is_feedback(payload: Any) -> bool:
    return isinstance(payload, dict) and "feedback" in payload


def is_info(payload: Any) -> bool:
    return isinstance(payload, dict) and set(payload) == {"info"}


def _new_id() -> str:
    return f"gen-{uuid.uuid4().hex}"


def given_id(headers: Mapping[str, str]) -> str | None:
    """The caller's inference id, checked (400 if it can't name a record)."""
    given = headers.get(INFERENCE_ID_HEADER)
    if given is not None:
        try:
            check_id(given, "the X-Amzn-SageMaker-Inference-Id header")
        except FeedbackError as exc:
            raise ClientError(f"{exc}; or leave the header out and the server picks an id",
                              status=400) from None
    return given


def _ids(given: str | None, count: int) -> tuple[str, list[str]]:
    base = given or _new_id()
    return base, [base] if count == 1 else [f"{base}-{i}" for i in range(count)]


def _without_seed(parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in parameters.items() if k != "seed"}


@dataclass
class Pending:
    """One invocation between its start and its answer."""

    family: str
    kind: str
    payload: Any  # what a family handler decodes: the caller's, with the seed filled in
    base: str  # the request's id; its generations' ids are `ids`
    ids: list[str]
    inputs: list[Any]  # one per generation
    parameters: dict[str, Any]
    given: bool = False  # the id came from the caller
    seed_given: bool = False  # the caller chose the seed
    records: list[GenerationRecord] = field(default_factory=list)
    #: the seed of the recorded generation this request replays (reconcile)
    replay_seed: int | None = None
    model: str | None = None  # the served model's id, written into the records
    started: float = field(default_factory=time.monotonic)

    @property
    def seed(self) -> int | None:
        seed = self.parameters.get("seed")
        return seed if isinstance(seed, int) else None

    def headers(self) -> dict[str, str]:
        named = self.ids[0] if len(self.ids) == 1 else f"{self.base}-{{0..{len(self.ids) - 1}}}"
        return {GENERATION_ID_HEADER: named, CUSTOM_ATTRIBUTES_HEADER: f"generation_id={named}"}

    def reconcile(self, store: Any) -> None:
        """Refuse a caller's id that already names another generation; remember the seed
        of the one this request repeats (409 for anything but a single, same request)."""
        if not self.given or store is None:
            return
        stored = store.get_generation(self.ids[0])
        if stored is None:
            return
        same = (len(self.ids) == 1 and stored.kind == self.kind
                and stored.inputs == self.inputs[0]
                and (stored.parameters == self.parameters if self.seed_given else
                     _without_seed(stored.parameters) == _without_seed(self.parameters))
                and not (self.parameters.get("best_of") or 1) > 1)
        if not same:
            raise ClientError(
                f"the X-Amzn-SageMaker-Inference-Id {self.base!r} already names an earlier "
                f"generation of another request; send a new id with each request (or the "
                f"same request again, to replay it)", status=409, error_type="validation")
        seed = stored.parameters.get("seed")
        self.replay_seed = seed if isinstance(seed, int) else None

    def _stamp(self, item: dict[str, Any], index: int) -> dict[str, Any]:
        seed = item.get("seed", self.seed)
        parameters = {**self.parameters, "seed": seed} if seed is not None else \
            _without_seed(self.parameters)
        return {**item, "generation_id": self.ids[index], "seed": seed,
                "parameters": parameters}

    def _keep(self, index: int, stamped: Mapping[str, Any], output: Mapping[str, Any]) -> None:
        self.records.append(GenerationRecord(
            generation_id=self.ids[index], family=self.family, kind=self.kind,
            inputs=self.inputs[index], parameters=stamped["parameters"], output=dict(output),
            model=self.model,
            latency_ms=round((time.monotonic() - self.started) * 1000, 3)))

    def finish(self, result: Any, media_type: str | None = None) -> Any:
        """The answer with ids added; fills `records`. `media_type` marks a binary body."""
        if media_type is not None:
            encoded = base64.b64encode(result).decode("ascii")
            key = "midi_base64" if "midi" in media_type else "png_base64"
            self._keep(0, {"parameters": self.parameters}, {key: encoded})
            return result
        if isinstance(result, list):  # TGI: one item per prompt
            stamped = []
            for i, item in enumerate(result):
                if isinstance(item, dict):
                    item = self._stamp(item, i)
                    self._keep(i, item, output_of(item))
                stamped.append(item)
            return stamped
        if isinstance(result, dict):
            stamped_one = self._stamp(result, 0)
            self._keep(0, stamped_one, output_of(result))
            return stamped_one
        return result

    def finish_event(self, event: Any) -> Any:
        """A stream event; the final one (text's with generated_text, an image family's
        `final` event) gets the id and a record."""
        if isinstance(event, dict) and event.get("generated_text") is not None:
            details = event.get("details") or {}
            stamped = self._stamp({**event, "seed": details.get("seed")}, 0)
            self._keep(0, stamped, {"text": event["generated_text"]})
            return stamped
        if isinstance(event, dict) and event.get("event") == "final":
            stamped = self._stamp(event, 0)
            self._keep(0, stamped, output_of(event))
            return stamped
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
    return {"json": {k: v for k, v in item.items()
                     if k not in ("seed", "kind", "generation_id", "parameters")}}


def _kind(payload: dict[str, Any], default_kind: str | None) -> str:
    kind = payload.get("kind")
    if isinstance(kind, str):
        return kind
    return default_kind or "generate"


def _seed_of(value: Any) -> Any:
    """A seed as the caller wrote it: a whole number, or digits in a string (parsed);
    anything else is left for the handler's validation to refuse."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def begin(family: str, payload: Any, headers: Mapping[str, str], *,
          default_kind: str | None = None) -> Pending:
    """Ids and a seed for the generation a family handler's `payload` asks for
    (ClientError if the given id is malformed)."""
    given = given_id(headers)
    if not isinstance(payload, dict):
        # Not a request any handler takes; let the handler's decode say what to send.
        base, ids = _ids(given, 1)
        return Pending(family, "generate", payload, base, ids, [payload], {},
                       given=given is not None)
    payload = copy.deepcopy(payload)
    seed_given = payload.get("seed") is not None
    if seed_given:
        payload["seed"] = _seed_of(payload["seed"])
    else:
        payload["seed"] = fresh_seed(MAX_PICKED_SEED)
    base, ids = _ids(given, 1)
    return Pending(family=family, kind=_kind(payload, default_kind), payload=payload,
                   base=base, ids=ids,
                   inputs=[{k: payload[k] for k in INPUT_FIELDS if k in payload}],
                   parameters={k: v for k, v in payload.items()
                               if k not in INPUT_FIELDS and k not in ("kind", "stream")},
                   given=given is not None, seed_given=seed_given)


def begin_text(family: str, prompts: list[str], parameters: Mapping[str, Any],
               headers: Mapping[str, str], *, kind: str = "generate") -> Pending:
    """Ids for a decoded text request: one generation per prompt."""
    given = given_id(headers)
    base, ids = _ids(given, len(prompts))
    return Pending(family=family, kind=kind, payload=None, base=base, ids=ids,
                   inputs=list(prompts), parameters=dict(parameters),
                   given=given is not None, seed_given=parameters.get("seed") is not None)


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
