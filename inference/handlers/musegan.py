"""Serving the musegan family: a melody in, a four-track arrangement out.

    {"kind": "accompany",
     "melody": [{"pitch": 67, "start": 0, "duration": 1}, ...],   # quarter notes; or
     "melody_midi": "<base64 MIDI>",                               # its highest part
     "bars": 4, "threshold": 0.5, "seed": 1, "tempo_bpm": 100,
     "programs": {"melody": 73, "alto": 68, "tenor": 71, "bass": 70},
     "pianoroll": false}
    -> {"kind": "accompany", "seed": 1, "bars": 4, "threshold": 0.5, "tempo_bpm": 100,
        "tracks": [{"name": "melody", "program": 73, "notes": [{"pitch", "start",
                    "duration"}, ...]}, ...],
        "media_type": "audio/midi", "midi": "<base64 four-track MIDI>",
        "pianoroll": "<base64 PNG>"}   # only when asked for

`Accept: audio/midi` answers with the MIDI file itself, `Accept: image/png` with the
piano-roll picture. The same seed (and melody and parameters) gives the same music.
"""

from __future__ import annotations

import base64
import random
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inference.errors import ClientError, from_validation_error, midi_from_base64
from inference.handlers import Binary
from inference.threads import fit_threads
from training.artifact import Artifact
from training.data.errors import DataError
from training.data.midi import write_tracks
from training.data.pianoroll import (
    PITCHES,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    TRACKS,
    StepNote,
    melody_of_midi,
    melody_steps,
    notes_to_roll,
    picture,
    roll_to_notes,
    steps_to_quarters,
)
from training.data.png import encode_png
from training.recipes.musegan import load

MIDI, PNG = "audio/midi", "image/png"
MAX_BARS = 32  # 32 bars of 4/4: about a minute and a half at 100 bpm
MAX_NOTES = 2048
PNG_SCALE = 4


class MelodyNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pitch: int = Field(ge=0, le=127, description="MIDI pitch (60 is middle C)")
    start: float = Field(ge=0.0, le=4.0 * MAX_BARS * 4, description="in quarter notes")
    duration: float = Field(gt=0.0, le=64.0, description="in quarter notes")


class AccompanyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["accompany"] = "accompany"
    melody: list[MelodyNote] | None = Field(None, max_length=MAX_NOTES)
    melody_midi: str | None = Field(None, description="a MIDI file, base64")
    bars: int | None = Field(None, ge=1, le=MAX_BARS,
                             description="bars to arrange; the melody's length by default")
    threshold: float = Field(0.5, gt=0.0, lt=1.0,
                             description="a voice sings where its likeliest pitch's "
                                         "probability is above this")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    tempo_bpm: float = Field(100.0, gt=0.0, le=400.0)
    programs: dict[str, int] = Field(default_factory=dict,
                                     description="General MIDI program per track name")
    pianoroll: bool = Field(False, description="add a base64 piano-roll PNG to the answer")
    stream: Literal[False] = False

    @field_validator("programs")
    @classmethod
    def _known_tracks(cls, value: dict[str, int]) -> dict[str, int]:
        for name, program in value.items():
            if name not in TRACKS:
                raise ValueError(f"unknown track {name!r}; the tracks are "
                                 f"{', '.join(TRACKS)}")
            if not isinstance(program, int) or not 0 <= program <= 127:
                raise ValueError(f"{name}: {program!r} is not a General MIDI program number; "
                                 f"give 0-127 (0 piano, 40 violin, 42 cello, 73 flute)")
        return value


VALID_KEYS = {"body": sorted(AccompanyRequest.model_fields)}


@dataclass(frozen=True)
class Decoded:
    request: AccompanyRequest
    melody: list[StepNote]
    bars: int
    seed: int
    answer: str  # "json", MIDI or PNG


def _bars_of(melody: list[StepNote]) -> int:
    return -(-max(end for _, _, end in melody) // STEPS_PER_BAR)


class MuseGANHandler:
    family = "musegan"
    #: How the playground asks (see inference/playground/hints.py): a melody uploaded as
    #: MIDI, the four-track arrangement played back.
    playground: ClassVar[dict[str, Any]] = {
        "input": "midi", "input_field": "melody_midi", "stream": False, "output": "midi",
        "template": {"kind": "accompany", "threshold": 0.5, "pianoroll": True}}

    def __init__(self, artifact: Artifact, device: str = "cpu") -> None:
        loaded = load(artifact, device)
        self.model, self.device = loaded.model, device
        probe = torch.zeros((1, loaded.config.n_bars, STEPS_PER_BAR, PITCHES), device=device)
        probe[..., 24] = 1.0
        fit_threads(lambda: self.model.arrange(probe))

    def decode(self, payload: Any, accept: str | None = None) -> Decoded:
        if not isinstance(payload, dict):
            raise ClientError('send a JSON object such as {"melody": [{"pitch": 67, "start": '
                              '0, "duration": 1}], "seed": 1}')
        if payload.get("kind", "accompany") != "accompany":
            raise ClientError(f"kind {payload.get('kind')!r} is not served by this musegan "
                              f"model; it answers kind \"accompany\"")
        try:
            request = AccompanyRequest.model_validate(payload)
        except ValidationError as exc:
            raise from_validation_error(exc, valid=VALID_KEYS) from None
        if request.melody is not None and request.melody_midi is not None:
            raise ClientError("give melody or melody_midi, not both")
        if request.melody_midi is not None:
            data = midi_from_base64(request.melody_midi, "melody_midi")
            try:
                notes = melody_of_midi(data, "melody_midi")
            except DataError as exc:
                raise ClientError(f"{exc}; send a Standard MIDI File (.mid)") from None
        elif request.melody is not None:
            notes = [(n.pitch, n.start, n.duration) for n in request.melody]
        else:
            raise ClientError("send a melody: melody (a list of notes such as {\"pitch\": 67, "
                              "\"start\": 0, \"duration\": 1}, in quarter notes) or "
                              "melody_midi (a base64 MIDI file)")
        if not notes:
            raise ClientError("the melody holds no notes; send at least one note")
        melody = melody_steps(notes)
        length = _bars_of(melody)
        if request.bars is None and length > MAX_BARS:
            raise ClientError(f"the melody spans {length} bars of 4/4; this endpoint arranges "
                              f"at most {MAX_BARS}: send a shorter melody, or set bars (up to "
                              f"{MAX_BARS}) to arrange its beginning")
        bars = request.bars or length
        melody = [n for n in melody if n[1] < bars * STEPS_PER_BAR]
        if not melody:
            raise ClientError(f"the melody has no note in its first {bars} bar(s); raise bars "
                              f"or start the melody earlier")
        media = (accept or "").lower()
        answer = MIDI if MIDI in media else PNG if PNG in media else "json"
        seed = request.seed if request.seed is not None else \
            random.SystemRandom().randrange(2**31)
        return Decoded(request=request, melody=melody, bars=bars, seed=seed, answer=answer)

    def wants_stream(self, request: Any) -> bool:
        return False

    def stream(self, request: Any, cancelled: threading.Event | None = None) -> Any:
        raise ClientError("accompaniment is answered whole, not streamed; set stream to false")

    def arrange(self, decoded: Decoded) -> np.ndarray:
        """The four tracks as a (4, bars·16, P) 0/1 roll."""
        steps = decoded.bars * STEPS_PER_BAR
        melody = notes_to_roll([decoded.melody], steps)[0]
        x = torch.from_numpy(melody).float().view(1, decoded.bars, STEPS_PER_BAR, PITCHES)
        generator = torch.Generator(device=self.device).manual_seed(decoded.seed)
        with torch.inference_mode():
            arranged = self.model.arrange(x.to(self.device), threshold=decoded.request.threshold,
                                          generator=generator)
        return arranged.view(len(TRACKS), steps, PITCHES).cpu().numpy()

    def predict(self, decoded: Decoded) -> Any:
        request = decoded.request
        roll = self.arrange(decoded)
        steps = decoded.bars * STEPS_PER_BAR
        # The melody keeps its own pitches and lengths (the roll folds it into range).
        melody = [(p, a, min(b, steps)) for p, a, b in decoded.melody]
        tracks = [steps_to_quarters(n) for n in [melody, *roll_to_notes(roll[1:])]]
        programs = [request.programs.get(name, 0) for name in TRACKS]
        midi = write_tracks([(name.capitalize(), program, notes) for name, program, notes
                             in zip(TRACKS, programs, tracks, strict=True)],
                            tempo_bpm=request.tempo_bpm)
        if decoded.answer == MIDI:
            return Binary(midi, MIDI)
        if decoded.answer == PNG or request.pianoroll:
            png = encode_png(picture(roll), scale=PNG_SCALE)
            if decoded.answer == PNG:
                return Binary(png, PNG)
        body: dict[str, Any] = {
            "kind": "accompany", "seed": decoded.seed, "bars": decoded.bars,
            "threshold": request.threshold, "tempo_bpm": request.tempo_bpm,
            "steps_per_quarter": STEPS_PER_QUARTER,
            "tracks": [{"name": name, "program": program, "notes": [
                {"pitch": p, "start": s, "duration": d} for p, s, d in notes]}
                for name, program, notes in zip(TRACKS, programs, tracks, strict=True)],
            "media_type": MIDI, "midi": base64.b64encode(midi).decode("ascii"),
        }
        if request.pianoroll:
            body["pianoroll"] = base64.b64encode(png).decode("ascii")
        return body
