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
