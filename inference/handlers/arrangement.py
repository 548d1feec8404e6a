"""What the music families that take a melody share (musegan arranges it, rnn continues
it): the melody in, as notes or a MIDI file, and the music out, as multi-track MIDI, a
piano-roll PNG, or JSON that holds both.

Times are in quarter notes; a note is (pitch, start, duration).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from inference.errors import ClientError, midi_from_base64
from inference.handlers.contract import Binary
from inference.seeds import fresh_seed
from training.models.formats.midi import MidiError, write_tracks
from training.models.formats.pianoroll import melody_of_midi, picture
from training.models.formats.png import encode_png

MIDI, PNG = "audio/midi", "image/png"
MAX_BARS = 32  # 32 bars of 4/4: about a minute and a half at 100 bpm
MAX_NOTES = 2048
PNG_SCALE = 4

#: (pitch, start, duration) in quarter notes.
QuarterNote = tuple[int, float, float]
#: (track name, General MIDI program, notes).
Track = tuple[str, int, Sequence[QuarterNote]]


class MelodyNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pitch: int = Field(ge=0, le=127, description="MIDI pitch (60 is middle C)")
    start: float = Field(ge=0.0, le=4.0 * MAX_BARS * 4, description="in quarter notes")
    duration: float = Field(gt=0.0, le=64.0, description="in quarter notes")


class MelodyRequest(BaseModel):
    """The fields every melody-in, tracks-out request has; a family adds its own."""

    model_config = ConfigDict(extra="forbid")
    #: The answer's track names, the first being the melody.
    tracks: ClassVar[tuple[str, ...]] = ("melody",)

    kind: Literal["accompany"] = "accompany"
    melody: list[MelodyNote] | None = Field(None, max_length=MAX_NOTES)
    melody_midi: str | None = Field(None, description="a MIDI file, base64")
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
            if name not in cls.tracks:
                raise ValueError(f"unknown track {name!r}; the tracks are "
                                 f"{', '.join(cls.tracks)}")
            if not isinstance(program, int) or not 0 <= program <= 127:
                raise ValueError(f"{name}: {program!r} is not a General MIDI program number; "
                                 f"give 0-127 (0 piano, 40 violin, 42 cello, 73 flute)")
        return value

    def program_list(self) -> list[int]:
        """Each track's program, 0 (piano) where none is given."""
        return [self.programs.get(name, 0) for name in self.tracks]


def melody_of(melody: Sequence[MelodyNote] | None, melody_midi: str | None
              ) -> list[QuarterNote]:
    """The request's melody, from its note list or its base64 MIDI file (the file's
    highest part), with at least one note; ClientError says what to send otherwise."""
    if melody is not None and melody_midi is not None:
        raise ClientError("give melody or melody_midi, not both")
    if melody_midi is not None:
        data = midi_from_base64(melody_midi, "melody_midi")
        try:
            notes = melody_of_midi(data, "melody_midi")
        except MidiError as exc:
            raise ClientError(f"{exc}; send a Standard MIDI File (.mid)") from None
    elif melody is not None:
        notes = [(n.pitch, n.start, n.duration) for n in melody]
    else:
        raise ClientError("send a melody: melody (a list of notes such as {\"pitch\": 67, "
                          "\"start\": 0, \"duration\": 1}, in quarter notes) or "
                          "melody_midi (a base64 MIDI file)")
    if not notes:
        raise ClientError("the melody holds no notes; send at least one note")
    return notes


def answer_for(accept: str | None) -> str:
    """What the caller asked the answer to be: MIDI, PNG or "json"."""
    media = (accept or "").lower()
    return MIDI if MIDI in media else PNG if PNG in media else "json"


def seed_or_new(seed: int | None) -> int:
    return seed if seed is not None else fresh_seed(2**31)


def respond(*, answer: str, tracks: Sequence[Track], roll: np.ndarray, tempo_bpm: float,
            pianoroll: bool, fields: dict[str, Any]) -> Binary | dict[str, Any]:
    """The answer: the tracks as a multi-track MIDI file, ``roll`` (tracks, steps,
    pitches) as a piano-roll PNG, or JSON of ``fields``, the tracks and the MIDI file
    (base64), with the PNG when ``pianoroll``."""
    midi = write_tracks([(name.capitalize(), program, notes)
                         for name, program, notes in tracks], tempo_bpm=tempo_bpm)
    if answer == MIDI:
        return Binary(midi, MIDI)
    png = encode_png(picture(roll), scale=PNG_SCALE) if answer == PNG or pianoroll else b""
    if answer == PNG:
        return Binary(png, PNG)
    body: dict[str, Any] = {
        **fields, "tempo_bpm": tempo_bpm,
        "tracks": [{"name": name, "program": program, "notes": [
            {"pitch": p, "start": s, "duration": d} for p, s, d in notes]}
            for name, program, notes in tracks],
        "media_type": MIDI, "midi": base64.b64encode(midi).decode("ascii"),
    }
    if pianoroll:
        body["pianoroll"] = base64.b64encode(png).decode("ascii")
    return body
