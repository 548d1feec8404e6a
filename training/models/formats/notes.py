"""Melodies as note events: a note is a pitch (or a rest) and a duration in quarter notes,
and a melody becomes tokens as `<end> P60 D1.0 P62 D0.5 REST D1.0 ... <end>`: a pitch (or
rest) token, then a duration token, so a model learns rhythm and pitch in one sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Note lengths in quarter notes that durations are snapped to.
DURATIONS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
REST = "REST"
END = "<end>"
LOWEST, HIGHEST = 21, 108  # the piano's range: A0 .. C8
#: The event vocabulary's file in a melody artifact.
VOCABULARY_FILE = "vocabulary.json"


@dataclass(frozen=True)
class Note:
    pitch: int | None  # MIDI pitch; None is a rest
    duration: float  # in quarter notes, one of DURATIONS

    def to_json(self) -> dict[str, object]:
        return {"pitch": self.pitch, "duration": self.duration}


def snap(duration: float) -> float:
    return min(DURATIONS, key=lambda d: abs(d - duration))


class EventVocabulary:
    """Token ids for pitches, rests, durations and the end marker; saved as JSON."""

    def __init__(self) -> None:
        self.tokens = [END, REST, *(f"P{p}" for p in range(LOWEST, HIGHEST + 1)),
                       *(f"D{d:g}" for d in DURATIONS)]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.end_id = self.index[END]
        self.pitch_ids = [self.index[REST], *(self.index[f"P{p}"]
                                              for p in range(LOWEST, HIGHEST + 1))]
        self.duration_ids = [self.index[f"D{d:g}"] for d in DURATIONS]

    @property
    def size(self) -> int:
        return len(self.tokens)

    def encode(self, melody: Sequence[Note], *, close: bool = True) -> list[int]:
        ids = [self.end_id]
        for note in melody:
            if note.pitch is None:
                ids.append(self.index[REST])
            else:
                pitch = min(max(note.pitch, LOWEST), HIGHEST)
                ids.append(self.index[f"P{pitch}"])
            ids.append(self.index[f"D{snap(note.duration):g}"])
        return [*ids, self.end_id] if close else ids

    def decode(self, ids: Sequence[int]) -> list[Note]:
        """Notes from a token sequence; an unpaired pitch at the end is dropped."""
        notes, pitch, has_pitch = [], None, False
        for i in ids:
            token = self.tokens[i]
            if token == REST or token.startswith("P"):
                pitch, has_pitch = (None if token == REST else int(token[1:])), True
            elif token.startswith("D") and has_pitch:
                notes.append(Note(pitch, float(token[1:])))
                has_pitch = False
        return notes

    def to_json(self) -> dict[str, object]:
        return {"tokens": self.tokens, "durations": list(DURATIONS)}


def transpose(melody: Sequence[Note], semitones: int) -> list[Note]:
    return [Note(None if n.pitch is None else n.pitch + semitones, n.duration) for n in melody]


def melody_of_score(score: object) -> list[Note]:
    from music21 import note as m21note
    from music21 import stream

    assert isinstance(score, stream.Score | stream.Part | stream.Stream)
    parts = list(getattr(score, "parts", [])) or [score]

    def mean_pitch(part: stream.Stream) -> float:
        pitches = [n.pitch.midi for n in part.recurse().notes if isinstance(n, m21note.Note)]
        return sum(pitches) / len(pitches) if pitches else -1.0

    top = max(parts, key=mean_pitch)  # the melody is usually the highest voice
    notes: list[Note] = []
    # Notes crossing a bar line arrive as tied pieces: merge them back into one note.
    for element in top.stripTies().flatten().notesAndRests:
        length = float(element.quarterLength)
        if length <= 0:
            continue  # grace notes
        if isinstance(element, m21note.Rest):
            pitch = None
        elif isinstance(element, m21note.Note):
            pitch = int(element.pitch.midi)
        else:  # a chord in a melody line: keep its top note
            pitch = int(max(p.midi for p in element.pitches))
        notes.append(Note(pitch, snap(length)))
    # Rests before the first and after the last note only pad bars: not part of the tune.
    while notes and notes[0].pitch is None:
        notes.pop(0)
    while notes and notes[-1].pitch is None:
        notes.pop()
    return notes


