"""People's judgements of generations, and where they are kept.

Two kinds of record, one JSON file each, named by id:
    generations/<generation_id>.json  what was generated: the request kind, its inputs,
                                      the parameters and seed that produced it, the output
    feedback/<feedback_id>.json       a judgement: a rating of one generation, or a
                                      preference between two (the better one "chosen")

The same layout lives in a local directory, under the feedback prefix of the capture
bucket in AWS, and in a refinement job's `feedback` channel (SageMaker copies that prefix
there), so the server writes what a training job reads with nothing in between.

Writes are atomic (a temporary file, then a link to its name) and idempotent: writing a
record whose id exists with the same content is a no-op; with other content it is
refused, so a retried request never doubles or rewrites a judgement. A server killed
mid-write leaves at most a temporary file, which readers skip. A judgement is also
fsynced before it is acknowledged, so it survives a power cut; a generation record (one
per request served, the log that judgements point into) is not: two fsyncs per request
would cost more than the generation itself, and a process crash loses nothing either way.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENERATIONS = "generations"
FEEDBACK = "feedback"
#: Ratings run from 1 (bad) to 5 (good); thumbs down and up are 1 and 5.
MIN_RATING, MAX_RATING = 1, 5
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class FeedbackError(ValueError):
    """A record is malformed or contradicts one already stored; the message says which."""


class FeedbackConflict(FeedbackError):
    """A record with this id is already stored with other content."""


def check_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise FeedbackError(
            f"{name} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {value!r}")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class GenerationRecord:
    generation_id: str
    family: str
    kind: str  # the request kind: "generate", "sample", "continue", "reconstruct", ...
    inputs: Any  # the prompt, primer, class or images, as the request gave them
    parameters: Mapping[str, Any]  # every setting that produced it, the seed included
    output: Mapping[str, Any]  # {"text": ...}, {"png_base64": ...}, {"midi_base64": ...}
    created: str = field(default_factory=_now)
    model: str | None = None  # the served model's id (GET /v1/models), for win rates
    latency_ms: float | None = None  # request read to answer ready, on the server

    def __post_init__(self) -> None:
        check_id(self.generation_id, "generation_id")


@dataclass(frozen=True)
class FeedbackRecord:
    """A rating of `generation_id`, or a preference of `chosen` over `rejected` (or both)."""

    feedback_id: str
    generation_id: str | None = None
    rating: int | None = None
    chosen: str | None = None
    rejected: str | None = None
    comment: str | None = None
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        check_id(self.feedback_id, "feedback_id")
        has_rating = self.rating is not None
        has_preference = self.chosen is not None or self.rejected is not None
        if not has_rating and not has_preference:
            raise FeedbackError(
                "feedback needs a rating (with generation_id) or a preference (chosen and "
                "rejected generation ids)")
        if has_rating:
            check_id(self.generation_id, "generation_id")
            if (isinstance(self.rating, bool) or not isinstance(self.rating, int)
                    or not MIN_RATING <= self.rating <= MAX_RATING):
                raise FeedbackError(f"rating must be a whole number from {MIN_RATING} to "
                                    f"{MAX_RATING}; got {self.rating!r}")
        if has_preference:
            check_id(self.chosen, "chosen")
            check_id(self.rejected, "rejected")
            if self.chosen == self.rejected:
                raise FeedbackError("chosen and rejected must be two different generations")
        if self.comment is not None and (not isinstance(self.comment, str)
                                         or len(self.comment) > 4000):
            raise FeedbackError("comment must be a string of at most 4,000 characters")


def feedback_from_json(data: Any) -> FeedbackRecord:
    """A FeedbackRecord from a request body or a stored file (FeedbackError if malformed)."""
    if not isinstance(data, Mapping):
        raise FeedbackError("feedback must be a JSON object")
    known = set(FeedbackRecord.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise FeedbackError(f"unknown feedback field(s) {', '.join(unknown)}; the fields "
                            f"are {', '.join(sorted(known))}")
    return FeedbackRecord(**data)


def generation_from_json(data: Any) -> GenerationRecord:
    if not isinstance(data, Mapping):
        raise FeedbackError("a generation record must be a JSON object")
    try:
        return GenerationRecord(**data)
    except TypeError as exc:
        raise FeedbackError(f"malformed generation record: {exc}") from None


def encode(record: GenerationRecord | FeedbackRecord) -> bytes:
    return json.dumps(asdict(record), sort_keys=True, separators=(",", ":")).encode()


#: What differs between a request and its retry, and does not make it another record.
_CIRCUMSTANTIAL = ("created", "latency_ms")


def same_record(stored: bytes, new: bytes) -> bool:
    """Equal apart from when and how fast: a retry of a request is the same record."""
    a, b = json.loads(stored), json.loads(new)
    for key in _CIRCUMSTANTIAL:
        a.pop(key, None)
        b.pop(key, None)
    return bool(a == b)


def record_key(record: GenerationRecord | FeedbackRecord) -> str:
    """The record's path under the store's root: `generations/<id>.json` or `feedback/...`."""
    if isinstance(record, GenerationRecord):
        return f"{GENERATIONS}/{record.generation_id}.json"
    return f"{FEEDBACK}/{record.feedback_id}.json"


class LocalFeedbackStore:
    """The store in a local directory (a dev box, a SageMaker channel, a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._folders: set[Path] = set()  # made already

    def put(self, record: GenerationRecord | FeedbackRecord) -> bool:
        """Store `record`; False when the same record was already there (a retry)."""
        key = record_key(record)
        path = self.root / key
        body = encode(record)
        durable = isinstance(record, FeedbackRecord)
        # The temporary name is unique to this record, process and thread: no search for
        # a free name, and two writers of one id never share one.
        tmp = path.parent / f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp"
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # the folder went away since: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            # link, not rename: of two racing writers of one id, exactly one wins.
            try:
                os.link(tmp, path)
            except FileExistsError:
                if same_record(path.read_bytes(), body):
                    return False
                raise FeedbackConflict(f"{key} already holds a different record; use a "
                                       f"new id") from None
        finally:
            os.unlink(tmp)
        if durable:
            _fsync_dir(path.parent)
        return True

    def get_generation(self, generation_id: str) -> GenerationRecord | None:
        path = self.root / GENERATIONS / f"{check_id(generation_id, 'generation_id')}.json"
        if not path.exists():
            return None
        return generation_from_json(json.loads(path.read_bytes()))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class FeedbackSet:
    """Everything in a store, joined: what refinement trains on."""

    generations: dict[str, GenerationRecord]
    feedback: list[FeedbackRecord]

    def preferences(self) -> list[tuple[GenerationRecord, GenerationRecord]]:
        """(chosen, rejected) pairs whose both generations are known."""
        pairs = []
        for f in self.feedback:
            if f.chosen in self.generations and f.rejected in self.generations:
                pairs.append((self.generations[f.chosen], self.generations[f.rejected]))
        return pairs

    def ratings(self) -> list[tuple[GenerationRecord, int]]:
        """(generation, rating) for each rating of a known generation."""
        return [(self.generations[f.generation_id], f.rating) for f in self.feedback
                if f.rating is not None and f.generation_id in self.generations]


def _records(directory: Path) -> Iterable[tuple[Path, Any]]:
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.json")):  # skips ".*.tmp" left by a killed writer
        try:
            yield path, json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FeedbackError(f"{path} is not a valid JSON record ({exc})") from None


def read_feedback(root: Path) -> FeedbackSet:
    """Read a store's directory (or a `feedback` channel holding the same layout)."""
    root = Path(root)
    generations = {}
    for path, data in _records(root / GENERATIONS):
        try:
            record = generation_from_json(data)
        except FeedbackError as exc:
            raise FeedbackError(f"{path}: {exc}") from None
        generations[record.generation_id] = record
    feedback = []
    for path, data in _records(root / FEEDBACK):
        try:
            feedback.append(feedback_from_json(data))
        except (FeedbackError, TypeError) as exc:
            raise FeedbackError(f"{path}: {exc}") from None
    return FeedbackSet(generations=generations, feedback=feedback)
