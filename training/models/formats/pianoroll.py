"""Four-part music as piano rolls: what the musegan family trains on and answers with.

A piece is four tracks (the melody, then alto, tenor and bass) of notes quantised to
`STEPS_PER_QUARTER` steps a quarter note, in 4/4 bars of `STEPS_PER_BAR` steps. A piano
roll is a (tracks, steps, PITCHES) array of 0/1: pitch `LOWEST + i` sounds at a step.
Consecutive active steps of one pitch are one note, so a repeated note merges into a
longer one when a roll becomes MIDI (MuseGAN's rolls have the same limit).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from training.models.formats.midi import MidiError, MidiSong, read_midi

TRACKS = ("melody", "alto", "tenor", "bass")
STEPS_PER_QUARTER = 4  # sixteenth notes
STEPS_PER_BAR = 4 * STEPS_PER_QUARTER  # 4/4
LOWEST, PITCHES = 36, 48  # C2 .. B5: four octaves hold the chorales' voices
#: A note in steps: (pitch, first step, step after the last).
StepNote = tuple[int, int, int]


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


def read_song(data: bytes, name: str) -> MidiSong:
    """A MIDI file's parts; a MidiError naming ``name`` when it does not read."""
    try:
        return read_midi(data)
    except (MidiError, IndexError, struct.error) as exc:
        raise MidiError(f"{name} is not a readable MIDI file ({exc})") from exc


def mean_pitch(notes: Sequence[tuple[int, float, float]]) -> float:
    return sum(n[0] for n in notes) / len(notes)


def melody_of_midi(data: bytes, name: str) -> list[tuple[int, float, float]]:
    """The melody of a MIDI file as (pitch, start, duration) in quarter notes: its highest
    part (by mean pitch), the top note where notes start together, offsets as in the file."""
    song = read_song(data, name)
    if not song.parts:
        raise MidiError(f"{name} holds no notes")
    top = max(song.parts, key=lambda part: mean_pitch(part.notes))
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
