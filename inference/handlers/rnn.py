"""Serving the RNN family: melody continuation (music) or TGI-shaped text generation.

Music requests:

    {"kind": "continue", "primer": [{"pitch": 67, "duration": 1.0}, ...],
     "max_new_notes": 32, "temperature": 1.0, "seed": 1}
    -> {"notes": [...], "midi": "<base64 of primer + continuation>", "seed": 1,
        "finish_reason": "length" | "end"}

`primer_midi` (base64 MIDI) may replace `primer`; `Accept: audio/midi` answers with the
MIDI file itself.

A second way to accompany a melody (beside the musegan family), in musegan's shapes:

    {"kind": "accompany",
     "melody": [{"pitch": 67, "start": 0, "duration": 1}, ...],   # quarter notes; or
     "melody_midi": "<base64 MIDI>",                               # its highest part
     "bars": 4, "temperature": 1.0, "seed": 1, "tempo_bpm": 100,
     "programs": {"melody": 73, "continuation": 71}, "pianoroll": false}
    -> {"kind": "accompany", "seed": 1, "bars": 4, "temperature": 1.0, "tempo_bpm": 100,
        "tracks": [{"name": "melody", ...}, {"name": "continuation", ...}],
        "media_type": "audio/midi", "midi": "<base64 two-track MIDI>"}

The melody is kept as it is on the first track; the model, primed with it, answers with
`bars` bars of its own on the second, from where the melody ends. `kind` may be left out
when the request names `melody` or `melody_midi`. `Accept: audio/midi` and `image/png`
answer with the MIDI file or the piano roll, as musegan's do.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import ClientError, from_validation_error, midi_from_base64
from inference.handlers.arrangement import (
    MAX_BARS,
    MelodyRequest,
    QuarterNote,
    answer_for,
    melody_of,
    respond,
    seed_or_new,
)
from inference.handlers.contract import Binary, Description, Handler
from inference.handlers.transformer import TextGenerationHandler
from inference.seeds import fresh_seed
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.formats.midi import MidiError, parse_midi, write_midi
from training.models.formats.notes import DURATIONS, Note, snap
from training.models.formats.pianoroll import (
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    melody_steps,
    notes_to_roll,
)
from training.models.formats.tokenizer import TextTokenizer
from training.models.rnn import continue_melody, from_artifact

MIDI = "audio/midi"
MAX_PRIMER_NOTES = 512


class PrimerNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pitch: int | None = Field(ge=0, le=127, description="MIDI pitch; null is a rest")
    duration: float = Field(gt=0.0, le=16.0, description="in quarter notes")


class ContinueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["continue"] = "continue"
    primer: list[PrimerNote] = Field(default_factory=list, max_length=MAX_PRIMER_NOTES)
    primer_midi: str | None = Field(None, description="a MIDI file, base64")
    max_new_notes: int = Field(32, ge=1, le=256)
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0 is greedy")
    top_k: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    tempo_bpm: float = Field(100.0, gt=0.0, le=400.0)
    program: int = Field(0, ge=0, le=127, description="General MIDI instrument")
    stream: Literal[False] = False


VALID_KEYS = {"body": sorted(ContinueRequest.model_fields)}


class AccompanyRequest(MelodyRequest):
    tracks: ClassVar[tuple[str, ...]] = ("melody", "continuation")

    bars: int = Field(4, ge=1, le=MAX_BARS, description="bars of 4/4 the model adds "
                                                         "after the melody")
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0 is greedy")
    top_k: int | None = Field(None, ge=1)


ACCOMPANY_KEYS = {"body": sorted(AccompanyRequest.model_fields)}


@dataclass(frozen=True)
class Accompaniment:
    request: AccompanyRequest
    melody: list[QuarterNote]
    seed: int
    answer: str  # "json", audio/midi or image/png


def primer_of(melody: list[QuarterNote]) -> list[Note]:
    """A melody of (pitch, start, duration) as the model's notes and rests: the highest
    note where notes start together, each held at most until the next one starts, the
    gaps between them rests, every length snapped to the vocabulary's."""
    top: dict[float, QuarterNote] = {}
    for note in melody:
        if note[1] not in top or note[0] > top[note[1]][0]:
            top[note[1]] = note
    starts = sorted(top)
    notes: list[Note] = []
    for here, after in zip(starts, [*starts[1:], None], strict=True):
        pitch, start, duration = top[here]
        if after is not None:
            duration = min(duration, after - start)
        notes.append(Note(pitch, snap(duration)))
        gap = (after - start - duration) if after is not None else 0.0
        while gap >= DURATIONS[0] / 2:
            rest = snap(min(gap, DURATIONS[-1]))
            notes.append(Note(None, rest))
            gap -= rest
    return notes


def placed(notes: list[Note], start: float, end: float) -> list[QuarterNote]:
    """``notes`` played one after another from ``start``, cut at ``end``."""
    out: list[QuarterNote] = []
    for note in notes:
        if start >= end:
            break
        if note.pitch is not None:
            out.append((note.pitch, start, min(note.duration, end - start)))
        start += note.duration
    return out


class MelodyHandler(Handler):
    family = "rnn"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        sequence_model = from_artifact(artifact, device)
        assert sequence_model.vocabulary is not None
        self.model = sequence_model.model
        self.vocabulary = sequence_model.vocabulary
        self.device = device

    def probe(self) -> None:
        """A short continuation: what the server times to fit its threads."""
        self._continue([Note(60, 1.0)], 4, 0.0, None, None)

    def decode(self, payload: Any, accept: str | None = None
               ) -> tuple[ContinueRequest, list[Note], bool] | Accompaniment:
        if isinstance(payload, dict):
            given = any(key in payload for key in ("melody", "melody_midi"))
            kind = payload.get("kind", "accompany" if given else "continue")
            if kind == "accompany":
                return self._decode_accompany(payload, accept)
            if kind != "continue":
                raise ClientError(f"kind {kind!r} is not served by this melody model; it "
                                  f"answers kind \"continue\" and kind \"accompany\"")
        try:
            request = ContinueRequest.model_validate(payload)
        except ValidationError as exc:
            raise from_validation_error(exc, valid=VALID_KEYS) from None
        if request.primer and request.primer_midi:
            raise ClientError("give primer or primer_midi, not both")
        primer = [Note(n.pitch, n.duration) for n in request.primer]
        if request.primer_midi is not None:
            data = midi_from_base64(request.primer_midi, "primer_midi")
            try:
                primer = parse_midi(data, "primer_midi")[:MAX_PRIMER_NOTES]
            except MidiError as exc:
                raise ClientError(str(exc)) from None
        return request, primer, bool(accept and MIDI in accept)

    def _decode_accompany(self, payload: dict[str, Any], accept: str | None
                          ) -> Accompaniment:
        try:
            request = AccompanyRequest.model_validate(payload)
        except ValidationError as exc:
            raise from_validation_error(exc, valid=ACCOMPANY_KEYS) from None
        melody = melody_of(request.melody, request.melody_midi)
        return Accompaniment(request=request, melody=melody, seed=seed_or_new(request.seed),
                             answer=answer_for(accept))

    def request_models(self) -> list[type[BaseModel]]:
        return [ContinueRequest, AccompanyRequest]

    def describe(self) -> Description:
        """The playground uploads a melody as MIDI and plays it back with the model's
        continuation on a second track."""
        return Description(kinds=("continue", "accompany"), playground={
            "input": "midi", "input_field": "melody_midi", "stream": False, "output": "midi",
            "template": {"kind": "accompany", "bars": 4, "temperature": 1.0,
                         "pianoroll": True}})

    def smoke_request(self) -> dict[str, Any]:
        """A short continuation of two notes: what a deployment's smoke test sends."""
        return {"kind": "continue", "max_new_notes": 4, "seed": 1,
                "primer": [{"pitch": 67, "duration": 1.0}, {"pitch": 69, "duration": 0.5}]}

    def accompany(self, decoded: Accompaniment) -> Any:
        """The melody on one track; on another, the model's continuation of it."""
        request = decoded.request
        end = max(start + duration for _, start, duration in decoded.melody)
        length = 4.0 * request.bars
        primer = primer_of(decoded.melody)[-MAX_PRIMER_NOTES:]
        notes = self._continue(primer, request.bars * STEPS_PER_BAR, request.temperature,
                               request.top_k, decoded.seed, quarters=length)
        tracks = [sorted(decoded.melody, key=lambda n: (n[1], n[0])),
                  placed(notes, end, end + length)]
        steps = -(-round((end + length) * STEPS_PER_QUARTER) // STEPS_PER_BAR) * STEPS_PER_BAR
        roll = notes_to_roll([melody_steps(track) for track in tracks], steps)
        return respond(answer=decoded.answer,
                       tracks=list(zip(request.tracks, request.program_list(), tracks,
                                       strict=True)),
                       roll=roll, tempo_bpm=request.tempo_bpm, pianoroll=request.pianoroll,
                       fields={"kind": "accompany", "seed": decoded.seed, "bars": request.bars,
                               "temperature": request.temperature, "continuation_start": end})

    def _continue(self, primer: list[Note], max_new: int, temperature: float,
                  top_k: int | None, seed: int | None, quarters: float | None = None
                  ) -> list[Note]:
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(seed or 0)
        return continue_melody(self.model, self.vocabulary, primer, max_new_notes=max_new,
                               temperature=temperature, top_k=top_k, generator=generator,
                               quarters=quarters)

    def predict(self, decoded: tuple[ContinueRequest, list[Note], bool] | Accompaniment
                ) -> Any:
        if isinstance(decoded, Accompaniment):
            return self.accompany(decoded)
        request, primer, as_midi = decoded
        seed = request.seed
        if seed is None and request.temperature > 0:
            seed = fresh_seed(2**63)  # reported back, to replay it
        notes = self._continue(primer, request.max_new_notes, request.temperature,
                               request.top_k, seed)
        midi = write_midi([*primer, *notes], tempo_bpm=request.tempo_bpm,
                          program=request.program)
        if as_midi:
            return Binary(midi, MIDI)
        return {
            "notes": [n.to_json() for n in notes],
            "midi": base64.b64encode(midi).decode("ascii"),
            "seed": seed,
            "finish_reason": "length" if len(notes) >= request.max_new_notes else "end",
        }


class RNNTextHandler(TextGenerationHandler):
    family = "rnn"

    def _load(self, artifact: Artifact, device: str) -> tuple[Any, TextTokenizer]:
        sequence_model = from_artifact(artifact, device)
        assert sequence_model.tokenizer is not None
        return sequence_model.model, sequence_model.tokenizer


def handler_for(artifact: Artifact, device: str = "cpu", settings: ServingSettings = DEFAULTS
                ) -> MelodyHandler | RNNTextHandler:
    if artifact.modality == "music":
        return MelodyHandler(artifact, device, settings)
    return RNNTextHandler(artifact, device, settings)
