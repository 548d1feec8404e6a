"""Four-part music as piano rolls: what the musegan family trains on and answers with.

A piece is four tracks (the melody, then alto, tenor and bass) of notes quantised to
`STEPS_PER_QUARTER` steps a quarter note, in 4/4 bars of `STEPS_PER_BAR` steps. A piano
roll is a (tracks, steps, PITCHES) array of 0/1: pitch `LOWEST + i` sounds at a step.
Consecutive active steps of one pitch are one note, so a repeated note merges into a
longer one when a roll becomes MIDI (MuseGAN's rolls have the same limit).

The bundled data set is music21's Bach chorales in 4/4: soprano as the melody, alto,
tenor and bass as the accompaniment. A user folder holds MIDI files of four or more
parts (tracks, or channels of a track); of the four with the most notes, the highest
(by mean pitch) is the melody and the other three are the accompaniment.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.errors import DataError
from training.data.folder import FolderScan
from training.data.midi import MidiError, MidiSong, read_midi
from training.data.text import _cache_dir

TRACKS = ("melody", "alto", "tenor", "bass")
STEPS_PER_QUARTER = 4  # sixteenth notes
STEPS_PER_BAR = 4 * STEPS_PER_QUARTER  # 4/4
LOWEST, PITCHES = 36, 48  # C2 .. B5: four octaves hold the chorales' voices
_EXTRACTION = 1  # bump when extraction changes, to invalidate cached corpora

#: A note in steps: (pitch, first step, step after the last).
StepNote = tuple[int, int, int]


@dataclass(frozen=True)
class Piece:
    name: str
    tracks: tuple[tuple[StepNote, ...], ...]  # len(TRACKS) tracks

    @property
    def steps(self) -> int:
        return max((end for track in self.tracks for _, _, end in track), default=0)

    @property
    def bars(self) -> int:
        return -(-self.steps // STEPS_PER_BAR)

    def roll(self) -> np.ndarray:
        return notes_to_roll(self.tracks, self.bars * STEPS_PER_BAR)


@dataclass(frozen=True)
class PieceCorpus:
    pieces: list[Piece]
    source: str
    files: int


def fold(pitch: int) -> int:
    """A pitch moved by octaves into the roll's range."""
    while pitch < LOWEST:
        pitch += 12
    while pitch >= LOWEST + PITCHES:
        pitch -= 12
    return pitch


def notes_to_roll(tracks: Sequence[Sequence[StepNote]], steps: int) -> np.ndarray:
    """(len(tracks), steps, PITCHES) uint8; notes past ``steps`` are cut."""
    roll = np.zeros((len(tracks), steps, PITCHES), dtype=np.uint8)
    for t, track in enumerate(tracks):
        for pitch, start, end in track:
            if start < steps:
                roll[t, start:min(end, steps), fold(pitch) - LOWEST] = 1
    return roll


def roll_to_notes(roll: np.ndarray) -> list[list[StepNote]]:
    """(tracks, steps, PITCHES) 0/1 -> per track, the runs of active steps as notes."""
    out: list[list[StepNote]] = []
    for track in np.asarray(roll, dtype=bool):
        padded = np.zeros((track.shape[0] + 2, track.shape[1]), dtype=np.int8)
        padded[1:-1] = track
        change = np.diff(padded, axis=0)  # +1 where a note starts, -1 after it ends
        starts, ends = np.nonzero(change == 1), np.nonzero(change == -1)
        # nonzero() orders by step, then pitch: sort each by pitch, then step, to pair them.
        s = sorted(zip(starts[1], starts[0], strict=True))
        e = sorted(zip(ends[1], ends[0], strict=True))
        notes = [(int(p) + LOWEST, int(a), int(b)) for (p, a), (_, b) in zip(s, e, strict=True)]
        out.append(sorted(notes, key=lambda n: (n[1], n[0])))
    return out


def phrases(pieces: Sequence[Piece], bars: int, *, stride: int = 1) -> np.ndarray:
    """Every window of ``bars`` bars (starting each ``stride`` bars) of every piece:
    (N, tracks, bars * STEPS_PER_BAR, PITCHES) uint8."""
    windows = []
    width = bars * STEPS_PER_BAR
    for piece in pieces:
        roll = piece.roll()
        for bar in range(0, piece.bars - bars + 1, stride):
            window = roll[:, bar * STEPS_PER_BAR: bar * STEPS_PER_BAR + width]
            if window[0].any():  # a phrase with a melody to accompany
                windows.append(window)
    if not windows:
        return np.zeros((0, len(TRACKS), width, PITCHES), dtype=np.uint8)
    return np.stack(windows)


# --- reading music ------------------------------------------------------------------
def _part_notes(part: Any, shift: float) -> tuple[StepNote, ...]:
    """A music21 part's notes in steps; chords give all their pitches."""
    notes: list[StepNote] = []
    for element in part.stripTies().flatten().notes:
        length = float(element.quarterLength)
        if length <= 0:
            continue  # grace notes
        start = round((float(element.offset) + shift) * STEPS_PER_QUARTER)
        end = max(start + 1, round((float(element.offset) + shift + length)
                                   * STEPS_PER_QUARTER))
        notes.extend((int(p.midi), start, end) for p in element.pitches)
    return tuple(sorted(notes, key=lambda n: (n[1], n[0])))


def _time_signatures(score: Any) -> set[str]:
    from music21 import meter

    return {ts.ratioString for ts in score.recurse().getElementsByClass(meter.TimeSignature)}


def _pickup(part: Any) -> float:
    """Quarter notes missing from an incomplete first bar (an upbeat), so bars line up."""
    measures = list(part.getElementsByClass("Measure"))
    return float(measures[0].paddingLeft) if measures else 0.0


def chorale_of(score: Any, name: str) -> Piece | None:
    """Soprano, alto, tenor and bass of a chorale parsed by music21, its upbeat padded to
    a whole bar; None for a chorale that is not in 4/4 or lacks one of the voices."""
    if _time_signatures(score) - {"4/4"}:
        return None
    parts = {str(p.partName or "").strip().lower(): p for p in getattr(score, "parts", [])}
    voices = ("soprano", "alto", "tenor", "bass")
    if not all(v in parts for v in voices):
        return None
    shift = _pickup(parts["soprano"])
    piece = Piece(name=name, tracks=tuple(_part_notes(parts[v], shift) for v in voices))
    return piece if piece.tracks[0] else None


def _cached(key: str) -> PieceCorpus | None:
    try:
        raw = json.loads((_cache_dir() / key).read_text(encoding="utf-8"))
        pieces = [Piece(name=p["name"], tracks=tuple(tuple((int(a), int(b), int(c))
                                                           for a, b, c in t)
                                                     for t in p["tracks"]))
                  for p in raw["pieces"]]
        return PieceCorpus(pieces=pieces, source=raw["source"], files=raw["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(key: str, corpus: PieceCorpus) -> None:
    cache = _cache_dir() / key
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"source": corpus.source, "files": corpus.files, "pieces": [
            {"name": p.name, "tracks": [list(map(list, t)) for t in p.tracks]}
            for p in corpus.pieces]}), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass


def bundled_chorales() -> PieceCorpus:
    """The 4/4 four-part Bach chorales of music21's corpus (parsed once, then cached)."""
    import music21
    from music21 import corpus

    paths = sorted(corpus.getComposer("bach"))
    key = hashlib.sha256(f"{music21.__version__}|{len(paths)}|{_EXTRACTION}".encode()
                         ).hexdigest()[:16]
    cached = _cached(f"bach-four-parts-{key}.json")
    if cached is not None:
        return cached
    pieces = []
    for path in paths:
        # forceSource: parse the file itself; never music21's pickled parse cache.
        piece = chorale_of(corpus.parse(path, forceSource=True), path.name)
        if piece is not None and piece.bars >= 4:
            pieces.append(piece)
    result = PieceCorpus(pieces=pieces, files=len(paths),
                         source=f"bundled: Bach chorales (4/4, four parts) from music21 "
                                f"{music21.__version__}")
    _store(f"bach-four-parts-{key}.json", result)
    return result


def _song(data: bytes, name: str) -> MidiSong:
    try:
        return read_midi(data)
    except (MidiError, IndexError, struct.error) as exc:
        raise DataError(f"{name} is not a readable MIDI file ({exc})") from exc


def _mean_pitch(notes: Sequence[tuple[int, float, float]]) -> float:
    return sum(n[0] for n in notes) / len(notes)


def piece_of_midi(data: bytes, name: str) -> Piece:
    """Four tracks of a MIDI file: of its parts (a track's notes on one channel; drums
    left out), the four with the most notes, highest (by mean pitch) first."""
    song = _song(data, name)
    if song.time_signatures - {"4/4"}:
        raise DataError(f"{name} is in {', '.join(sorted(song.time_signatures))}; the musegan "
                        f"family takes music in 4/4 only: leave this file out")
    if len(song.parts) < len(TRACKS):
        raise DataError(f"{name} holds {len(song.parts)} part(s) with notes; the musegan family "
                        f"needs four (a melody and three accompanying voices), one per MIDI "
                        f"track or channel")
    chosen = sorted(song.parts, key=lambda part: -len(part.notes))[:len(TRACKS)]
    chosen.sort(key=lambda part: _mean_pitch(part.notes), reverse=True)
    return Piece(name=name, tracks=tuple(tuple(sorted(melody_steps(part.notes),
                                                      key=lambda n: (n[1], n[0])))
                                         for part in chosen))


def load_piece_folder(scan: FolderScan) -> PieceCorpus:
    if scan.modality != "music":
        raise DataError(f"{scan.root} holds {scan.modality} files; expected MIDI (.mid/.midi) "
                        f"files of four parts")
    pieces = [piece_of_midi(path.read_bytes(), str(path)) for path in scan.files]
    return PieceCorpus(pieces=pieces, source=str(scan.root), files=len(scan.files))


def melody_of_midi(data: bytes, name: str) -> list[tuple[int, float, float]]:
    """The melody of a MIDI file as (pitch, start, duration) in quarter notes: its highest
    part (by mean pitch), the top note where notes start together, offsets as in the file."""
    song = _song(data, name)
    if not song.parts:
        raise DataError(f"{name} holds no notes")
    top = max(song.parts, key=lambda part: _mean_pitch(part.notes))
    highest: dict[float, tuple[int, float, float]] = {}
    for note in top.notes:
        if note[1] not in highest or note[0] > highest[note[1]][0]:
            highest[note[1]] = note
    return [highest[start] for start in sorted(highest)]


def melody_steps(melody: Sequence[tuple[int, float, float]]) -> list[StepNote]:
    """(pitch, start, duration) in quarter notes -> step notes (at least one step long)."""
    out = []
    for pitch, start, duration in melody:
        first = round(start * STEPS_PER_QUARTER)
        out.append((pitch, first, max(first + 1, round((start + duration)
                                                        * STEPS_PER_QUARTER))))
    return out


def steps_to_quarters(notes: Sequence[StepNote]) -> list[tuple[int, float, float]]:
    return [(p, a / STEPS_PER_QUARTER, (b - a) / STEPS_PER_QUARTER) for p, a, b in notes]


# --- pictures -------------------------------------------------------------------------
#: RGB of each track in a piano-roll picture: melody red, alto green, tenor blue, bass amber.
TRACK_COLOURS = np.array([[0.85, 0.15, 0.15], [0.1, 0.6, 0.2], [0.15, 0.35, 0.85],
                          [0.85, 0.55, 0.05]], dtype=np.float32)


def picture(roll: np.ndarray) -> np.ndarray:
    """(tracks, steps, PITCHES) -> a (3, PITCHES, steps) RGB image in [0, 1]: time to the
    right, pitch upward, each track in its colour, beats and bars in grey."""
    tracks, steps, pitches = roll.shape
    image = np.ones((3, pitches, steps), dtype=np.float32)
    image[:, :, ::STEPS_PER_QUARTER] = 0.93
    image[:, :, ::STEPS_PER_BAR] = 0.7
    for t in range(tracks - 1, -1, -1):  # the melody drawn last, on top
        on = np.asarray(roll[t], dtype=bool).T[::-1]  # (pitch high->low, steps)
        image[:, on] = TRACK_COLOURS[t % len(TRACK_COLOURS)][:, None]
    return image
