"""Write a melody as a Standard MIDI File (format 0, one track): small, exact, no deps."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from training.data.music import Note

TICKS_PER_QUARTER = 480


def _varlen(value: int) -> bytes:
    """MIDI's variable-length quantity: 7 bits a byte, high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def write_midi(notes: Sequence[Note], *, tempo_bpm: float = 100.0, program: int = 0,
               velocity: int = 80) -> bytes:
    """MIDI bytes of ``notes`` on channel 1 with General MIDI ``program`` (0: piano)."""
    if not 0 <= program <= 127:
        raise ValueError("program must be a General MIDI program number 0..127")
    events = bytearray()
    events += b"\x00\xff\x51\x03" + int(60_000_000 / tempo_bpm).to_bytes(3, "big")
    events += b"\x00" + bytes([0xC0, program])
    pending_rest = 0
    for note in notes:
        ticks = round(note.duration * TICKS_PER_QUARTER)
        if note.pitch is None:
            pending_rest += ticks
            continue
        events += _varlen(pending_rest) + bytes([0x90, note.pitch, velocity])
        events += _varlen(ticks) + bytes([0x80, note.pitch, 0])
        pending_rest = 0
    events += _varlen(pending_rest) + b"\xff\x2f\x00"  # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">I", len(events)) + bytes(events)


def _channel(index: int) -> int:
    """MIDI channel of the index-th track: 0, 1, ... skipping 9, General MIDI's drums."""
    return index if index < 9 else index + 1


def write_tracks(tracks: Sequence[tuple[str, int, Sequence[tuple[int, float, float]]]], *,
                 tempo_bpm: float = 100.0, velocity: int = 80) -> bytes:
    """A multi-track Standard MIDI File (format 1) in 4/4.

    ``tracks``: (name, General MIDI program, notes) each, a note being (pitch, start,
    duration) in quarter notes; each track gets its own channel, so its own instrument.
    """
    if len(tracks) > 15:
        raise ValueError("at most 15 tracks (MIDI has 16 channels, one of them drums)")
    conductor = bytearray(b"\x00\xff\x51\x03" + int(60_000_000 / tempo_bpm).to_bytes(3, "big"))
    conductor += b"\x00\xff\x58\x04\x04\x02\x18\x08"  # time signature 4/4
    conductor += b"\x00\xff\x2f\x00"
    chunks = [conductor]
    for index, (name, program, notes) in enumerate(tracks):
        if not 0 <= program <= 127:
            raise ValueError("program must be a General MIDI program number 0..127")
        channel = _channel(index)
        title = name.encode("ascii", errors="replace")[:127]
        events = bytearray(b"\x00\xff\x03" + _varlen(len(title)) + title)
        events += b"\x00" + bytes([0xC0 | channel, program])
        # (tick, order, message): note-offs sort before note-ons at the same tick, so a
        # repeated pitch is released before it sounds again.
        timeline: list[tuple[int, int, bytes]] = []
        for pitch, start, duration in notes:
            begin = round(start * TICKS_PER_QUARTER)
            end = max(begin + 1, round((start + duration) * TICKS_PER_QUARTER))
            timeline.append((begin, 1, bytes([0x90 | channel, pitch, velocity])))
            timeline.append((end, 0, bytes([0x80 | channel, pitch, 0])))
        now = 0
        for tick, _, message in sorted(timeline):
            events += _varlen(tick - now) + message
            now = tick
        events += b"\x00\xff\x2f\x00"
        chunks.append(events)
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(chunks), TICKS_PER_QUARTER)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(c)) + bytes(c) for c in chunks)
