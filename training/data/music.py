"""Music data: melodies as (pitch, duration) note events, and their token vocabulary.

The bundled data set is music21's Bach chorales (no download: they ship inside the
music21 package): the soprano line of each chorale is a melody. User folders of MIDI
files give one melody per file, its highest part. A melody becomes tokens as
`<end> P60 D1.0 P62 D0.5 REST D1.0 ... <end>`: a pitch (or rest) token, then a
duration token, so the model learns rhythm and pitch in one sequence.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from training.data.errors import DataError
from training.data.folder import FolderScan
from training.data.text import _cache_dir

#: Note lengths in quarter notes that durations are snapped to.
DURATIONS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
REST = "REST"
END = "<end>"
LOWEST, HIGHEST = 21, 108  # the piano's range: A0 .. C8
_EXTRACTION = 2  # bump when melody extraction changes, to invalidate cached corpora


@dataclass(frozen=True)
class Note:
    pitch: int | None  # MIDI pitch; None is a rest
    duration: float  # in quarter notes, one of DURATIONS

    def to_json(self) -> dict[str, object]:
        return {"pitch": self.pitch, "duration": self.duration}


def snap(duration: float) -> float:
    return min(DURATIONS, key=lambda d: abs(d - duration))


@dataclass(frozen=True)
class MusicCorpus:
    melodies: list[list[Note]]
    source: str
    files: int


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


def augment(melodies: Sequence[Sequence[Note]], seed: int,
            shifts: Sequence[int] = (-3, -2, -1, 1, 2, 3)) -> list[list[Note]]:
    """Each melody plus copies transposed by a few semitones: key is not what to learn."""
    rng = random.Random(seed)
    out = [list(m) for m in melodies]
    for melody in melodies:
        out.append(transpose(melody, rng.choice(list(shifts))))
    return out


def _melody_of(score: object) -> list[Note]:
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


def bundled_chorales() -> MusicCorpus:
    """Soprano lines of the Bach chorales in music21's corpus (parsed once, then cached)."""
    import music21
    from music21 import corpus

    paths = sorted(corpus.getComposer("bach"))
    source = f"bundled: Bach chorales from music21 {music21.__version__}"
    key = hashlib.sha256(f"{music21.__version__}|{len(paths)}|{_EXTRACTION}".encode()
                         ).hexdigest()[:16]
    cache = _cache_dir() / f"bach-melodies-{key}.json"
    try:
        raw = json.loads(cache.read_text(encoding="utf-8"))
        melodies = [[Note(p, d) for p, d in m] for m in raw["melodies"]]
        return MusicCorpus(melodies=melodies, source=source, files=raw["files"])
    except (OSError, ValueError, KeyError):
        pass
    melodies = []
    for path in paths:
        # forceSource: parse the file itself; never music21's pickled parse cache.
        melody = _melody_of(corpus.parse(path, forceSource=True))
        if len(melody) >= 8:
            melodies.append(melody)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"files": len(paths), "melodies": [
            [[n.pitch, n.duration] for n in m] for m in melodies]}), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass
    return MusicCorpus(melodies=melodies, source=source, files=len(paths))


def parse_midi(data: bytes, name: str = "MIDI data") -> list[Note]:
    """The melody of a MIDI file; a file that does not parse is a DataError naming it."""
    from music21 import converter

    try:
        score = converter.parseData(data, format="midi", forceSource=True)
    except Exception as exc:  # music21 raises many kinds on malformed MIDI
        raise DataError(f"{name} is not a readable MIDI file ({type(exc).__name__}: {exc})"
                        ) from exc
    melody = _melody_of(score)
    if not melody:
        raise DataError(f"{name} holds no notes")
    return melody


def load_midi_folder(scan: FolderScan) -> MusicCorpus:
    if scan.modality != "music":
        raise DataError(f"{scan.root} holds {scan.modality} files; expected MIDI (.mid/.midi)")
    melodies = [parse_midi(path.read_bytes(), str(path)) for path in scan.files]
    return MusicCorpus(melodies=melodies, source=str(scan.root), files=len(scan.files))


def in_key_share(primer: Sequence[Note], continuation: Sequence[Note]) -> float:
    """Share of the continuation's notes whose pitch class is in the primer's key.

    The key is estimated from the primer by the Krumhansl-Schmuckler algorithm
    (Krumhansl 1990), music21's `analyze('key')`.
    """
    from music21 import note as m21note
    from music21 import stream

    pitched = [n for n in continuation if n.pitch is not None]
    if not pitched:
        return 0.0
    line: Any = stream.Stream()
    for n in primer:
        if n.pitch is not None:
            line.append(m21note.Note(n.pitch, quarterLength=n.duration))
    scale = {p.pitchClass for p in line.analyze("key").pitches}
    return sum(1 for n in pitched if n.pitch is not None and n.pitch % 12 in scale) / len(pitched)
