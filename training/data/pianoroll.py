"""Four-part music data sets: pieces as tracks of notes, for the musegan family (piano
rolls themselves: training.models.formats.pianoroll).

The bundled data set is music21's Bach chorales in 4/4: soprano as the melody, alto,
tenor and bass as the accompaniment. A user folder holds MIDI files of four or more
parts (tracks, or channels of a track); of the four with the most notes, the highest
(by mean pitch) is the melody and the other three are the accompaniment.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.errors import DataError
from training.data.folder import FolderScan
from training.data.music import tune_of
from training.models.formats.midi import MidiError
from training.models.formats.pianoroll import (
    PITCHES,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    TRACKS,
    StepNote,
    mean_pitch,
    melody_steps,
    notes_to_roll,
    read_song,
)
from training.settings import cache_dir

_EXTRACTION = 1  # bump when extraction changes, to invalidate cached corpora


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


def piece_tune(piece: Piece) -> tuple[int, ...]:
    """A piece's tune, the opening of its melody track (training.data.music.tune_of)."""
    return tune_of([pitch for pitch, _, _ in piece.tracks[0]])


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
        raw = json.loads((cache_dir() / key).read_text(encoding="utf-8"))
        pieces = [Piece(name=p["name"], tracks=tuple(tuple((int(a), int(b), int(c))
                                                           for a, b, c in t)
                                                     for t in p["tracks"]))
                  for p in raw["pieces"]]
        return PieceCorpus(pieces=pieces, source=raw["source"], files=raw["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(key: str, corpus: PieceCorpus) -> None:
    cache = cache_dir() / key
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


def piece_of_midi(data: bytes, name: str) -> Piece:
    """Four tracks of a MIDI file: of its parts (a track's notes on one channel; drums
    left out), the four with the most notes, highest (by mean pitch) first."""
    try:
        song = read_song(data, name)
    except MidiError as exc:
        raise DataError(str(exc)) from exc
    if song.time_signatures - {"4/4"}:
        raise DataError(f"{name} is in {', '.join(sorted(song.time_signatures))}; the musegan "
                        f"family takes music in 4/4 only: leave this file out")
    if len(song.parts) < len(TRACKS):
        raise DataError(f"{name} holds {len(song.parts)} part(s) with notes; the musegan family "
                        f"needs four (a melody and three accompanying voices), one per MIDI "
                        f"track or channel")
    chosen = sorted(song.parts, key=lambda part: -len(part.notes))[:len(TRACKS)]
    chosen.sort(key=lambda part: mean_pitch(part.notes), reverse=True)
    return Piece(name=name, tracks=tuple(tuple(sorted(melody_steps(part.notes),
                                                      key=lambda n: (n[1], n[0])))
                                         for part in chosen))


def load_piece_folder(scan: FolderScan) -> PieceCorpus:
    if scan.modality != "music":
        raise DataError(f"{scan.root} holds {scan.modality} files; expected MIDI (.mid/.midi) "
                        f"files of four parts")
    pieces = [piece_of_midi(path.read_bytes(), str(path)) for path in scan.files]
    return PieceCorpus(pieces=pieces, source=str(scan.root), files=len(scan.files))


