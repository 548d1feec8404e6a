"""Serving the RNN family: melody continuation (music) or TGI-shaped text generation.

Music requests:

    {"kind": "continue", "primer": [{"pitch": 67, "duration": 1.0}, ...],
     "max_new_notes": 32, "temperature": 1.0, "seed": 1}
    -> {"notes": [...], "midi": "<base64 of primer + continuation>", "seed": 1,
        "finish_reason": "length" | "end"}

`primer_midi` (base64 MIDI) may replace `primer`; `Accept: audio/midi` answers with the
MIDI file itself.
"""

from __future__ import annotations

import base64
import random
import threading
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import ClientError, from_validation_error, midi_from_base64
from inference.handlers import Binary
from inference.handlers.transformer import TextGenerationHandler
from inference.threads import fit_threads
from training.artifact import Artifact
from training.data.errors import DataError
from training.data.midi import write_midi
from training.data.music import Note, parse_midi
from training.data.tokenizer import TextTokenizer
from training.recipes.rnn import continue_melody, load

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


class MelodyHandler:
    family = "rnn"

    def __init__(self, artifact: Artifact, device: str = "cpu") -> None:
        sequence_model = load(artifact, device)
        assert sequence_model.vocabulary is not None
        self.model = sequence_model.model
        self.vocabulary = sequence_model.vocabulary
        self.device = device
        fit_threads(lambda: self._continue([Note(60, 1.0)], 4, 0.0, None, None))

    def decode(self, payload: Any, accept: str | None = None
               ) -> tuple[ContinueRequest, list[Note], bool]:
        if isinstance(payload, dict) and payload.get("kind", "continue") != "continue":
            raise ClientError(f"kind {payload.get('kind')!r} is not served by this melody "
                              f"model; it answers kind \"continue\"")
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
            except DataError as exc:
                raise ClientError(str(exc)) from None
        return request, primer, bool(accept and MIDI in accept)

    def wants_stream(self, request: Any) -> bool:
        return False

    def stream(self, request: Any, cancelled: threading.Event | None = None) -> Any:
        raise ClientError("melody continuation is not streamed; set stream to false")

    def _continue(self, primer: list[Note], max_new: int, temperature: float,
                  top_k: int | None, seed: int | None) -> list[Note]:
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device).manual_seed(seed or 0)
        return continue_melody(self.model, self.vocabulary, primer, max_new_notes=max_new,
                               temperature=temperature, top_k=top_k, generator=generator)

    def predict(self, decoded: tuple[ContinueRequest, list[Note], bool]) -> Any:
        request, primer, as_midi = decoded
        seed = request.seed
        if seed is None and request.temperature > 0:
            seed = random.SystemRandom().randrange(2**63)  # reported back, to replay it
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
        sequence_model = load(artifact, device)
        assert sequence_model.tokenizer is not None
        return sequence_model.model, sequence_model.tokenizer


def handler_for(artifact: Artifact, device: str = "cpu") -> MelodyHandler | RNNTextHandler:
    if artifact.modality == "music":
        return MelodyHandler(artifact, device)
    return RNNTextHandler(artifact, device)
