"""Melody data sets (melodies as note events: training.models.formats.notes).

The bundled data set is music21's Bach chorales (no download: they ship inside the
music21 package): the soprano line of each chorale is a melody. User folders of MIDI
files give one melody per file, its highest part.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

from training.data.errors import DataError
from training.data.folder import FolderScan
from training.data.tokens import split
from training.models.formats.midi import MidiError, parse_midi
from training.models.formats.notes import Note, melody_of_score, transpose
from training.settings import cache_dir

T = TypeVar("T")

_EXTRACTION = 2  # bump when melody extraction changes, to invalidate cached corpora


@dataclass(frozen=True)
class MusicCorpus:
    melodies: list[list[Note]]
    source: str
    files: int


#: Notes whose steps name a tune: two melodies whose first OPENING_NOTES pitches move by
#: the same intervals are one tune (the chorales harmonise many tunes more than once, in
#: other keys), and a held-out split keeps a tune on one side (training.data.tokens.split).
OPENING_NOTES = 9


#: How held-out splits of the bundled melodies are made, for data summaries.
SPLIT_BY_TUNE = (f"by tune: pieces whose first {OPENING_NOTES} melody pitches move by the "
                 f"same intervals (in any key) are held out together")


def split_by_tune(items: Sequence[T], tune: Callable[[T], tuple[int, ...]], fraction: float,
                  seed: int, what: str) -> tuple[list[T], list[T], str]:
    """A held-out split that keeps each tune on one side (`tune` names an item's), and how
    it was made; where every item opens alike, by item (said so)."""
    if len({tune(item) for item in items}) >= 2:
        return *split(items, fraction, seed, what, group=tune), SPLIT_BY_TUNE
    return (*split(items, fraction, seed, what),
            "by piece: every piece opens alike, so no tune could be held out unseen")


def tune_of(pitches: Sequence[int]) -> tuple[int, ...]:
    """A melody's tune: the intervals between its first OPENING_NOTES pitches (rests
    skipped), the same in any key."""
    opening = list(pitches[:OPENING_NOTES])
    return tuple(b - a for a, b in pairwise(opening))


def melody_tune(melody: Sequence[Note]) -> tuple[int, ...]:
    return tune_of([n.pitch for n in melody if n.pitch is not None])


def augment(melodies: Sequence[Sequence[Note]], seed: int,
            shifts: Sequence[int] = (-3, -2, -1, 1, 2, 3)) -> list[list[Note]]:
    """Each melody plus copies transposed by a few semitones: key is not what to learn."""
    rng = random.Random(seed)
    out = [list(m) for m in melodies]
    for melody in melodies:
        out.append(transpose(melody, rng.choice(list(shifts))))
    return out


def bundled_chorales() -> MusicCorpus:
    """Soprano lines of the Bach chorales in music21's corpus (parsed once, then cached)."""
    import music21
    from music21 import corpus

    paths = sorted(corpus.getComposer("bach"))
    source = f"bundled: Bach chorales from music21 {music21.__version__}"
    key = hashlib.sha256(f"{music21.__version__}|{len(paths)}|{_EXTRACTION}".encode()
                         ).hexdigest()[:16]
    cache = cache_dir() / f"bach-melodies-{key}.json"
    try:
        raw = json.loads(cache.read_text(encoding="utf-8"))
        melodies = [[Note(p, d) for p, d in m] for m in raw["melodies"]]
        return MusicCorpus(melodies=melodies, source=source, files=raw["files"])
    except (OSError, ValueError, KeyError):
        pass
    melodies = []
    for path in paths:
        # forceSource: parse the file itself; never music21's pickled parse cache.
        melody = melody_of_score(corpus.parse(path, forceSource=True))
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


def load_midi_folder(scan: FolderScan) -> MusicCorpus:
    if scan.modality != "music":
        raise DataError(f"{scan.root} holds {scan.modality} files; expected MIDI (.mid/.midi)")
    try:
        melodies = [parse_midi(path.read_bytes(), str(path)) for path in scan.files]
    except MidiError as exc:
        raise DataError(str(exc)) from exc
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
