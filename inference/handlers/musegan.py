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

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError

from inference.errors import ClientError, from_validation_error
from inference.handlers.arrangement import (
    MAX_BARS,
    MelodyRequest,
    answer_for,
    melody_of,
    respond,
    seed_or_new,
)
from inference.handlers.contract import Description, Handler
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.formats.pianoroll import (
    PITCHES,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    TRACKS,
    StepNote,
    melody_steps,
    notes_to_roll,
    roll_to_notes,
    steps_to_quarters,
)
from training.models.musegan import from_artifact


class AccompanyRequest(MelodyRequest):
    tracks: ClassVar[tuple[str, ...]] = TRACKS

    bars: int | None = Field(None, ge=1, le=MAX_BARS,
                             description="bars to arrange; the melody's length by default")
    threshold: float = Field(0.5, gt=0.0, lt=1.0,
                             description="a voice sings where its likeliest pitch's "
                                         "probability is above this")


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


class MuseGANHandler(Handler):
    family = "musegan"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        loaded = from_artifact(artifact, device)
        self.model, self.device = loaded.model, device

    def probe(self) -> None:
        """An arrangement of a held note: what the server times to fit its threads."""
        melody = torch.zeros((1, self.model.cfg.n_bars, STEPS_PER_BAR, PITCHES),
                             device=self.device)
        melody[..., 24] = 1.0
        self.model.arrange(melody)

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
        notes = melody_of(request.melody, request.melody_midi)
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
        return Decoded(request=request, melody=melody, bars=bars, seed=seed_or_new(request.seed),
                       answer=answer_for(accept))

    def request_models(self) -> list[type[BaseModel]]:
        return [AccompanyRequest]

    def describe(self) -> Description:
        """The playground uploads a melody as MIDI and plays the four-track arrangement."""
        return Description(kinds=("accompany",), playground={
            "input": "midi", "input_field": "melody_midi", "stream": False, "output": "midi",
            "template": {"kind": "accompany", "threshold": 0.5, "pianoroll": True}})

    def smoke_request(self) -> dict[str, Any]:
        """One bar of a rising melody, arranged: what a deployment's smoke test sends."""
        return {"kind": "accompany", "bars": 1, "seed": 1, "melody": [
            {"pitch": pitch, "start": float(i), "duration": 1.0}
            for i, pitch in enumerate((67, 69, 71, 72))]}

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
        programs = request.program_list()
        return respond(answer=decoded.answer, tracks=list(zip(TRACKS, programs, tracks,
                                                              strict=True)),
                       roll=roll, tempo_bpm=request.tempo_bpm, pianoroll=request.pianoroll,
                       fields={"kind": "accompany", "seed": decoded.seed, "bars": decoded.bars,
                               "threshold": request.threshold,
                               "steps_per_quarter": STEPS_PER_QUARTER})
