"""Standard MIDI Files, small and exact, without dependencies.

`write_midi`: a melody as one track (format 0); `write_tracks`: several instruments, one
track each (format 1); `read_midi`: the notes of every track and channel of a file,
which is much faster than a full score parse when only notes are needed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from training.models.formats.notes import Note, melody_of_score

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


class MidiError(ValueError):
    """Bytes that are not a Standard MIDI File genkiln can read; the message says why."""


def _read_varlen(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= len(data):
            raise MidiError("a track ends inside a number")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos
    raise MidiError("a variable-length number is longer than 4 bytes")


#: Data bytes after each channel message's status nibble.
_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}


@dataclass(frozen=True)
class MidiPart:
    """The notes one track plays on one channel: (pitch, start, duration) in quarters."""

    name: str
    program: int
    notes: list[tuple[int, float, float]]


@dataclass(frozen=True)
class MidiSong:
    parts: list[MidiPart]  # drums (channel 10) left out
    time_signatures: set[str]  # e.g. {"4/4"}; empty when the file names none


def read_midi(data: bytes) -> MidiSong:
    """Parse a Standard MIDI File (format 0 or 1, ticks per quarter note)."""
    if data[:4] != b"MThd" or len(data) < 14:
        raise MidiError("it is too short or lacks the MIDI header (MThd)")
    length, _, tracks, division = struct.unpack(">IHHH", data[4:14])
    if division & 0x8000:
        raise MidiError("it counts time in SMPTE frames; export it with ticks per quarter note")
    if division == 0:
        raise MidiError("its header gives 0 ticks per quarter note")
    pos = 8 + length
    parts: list[MidiPart] = []
    signatures: set[str] = set()
    for _ in range(tracks):
        if data[pos:pos + 4] != b"MTrk" or pos + 8 > len(data):
            raise MidiError(f"a track chunk (MTrk) is missing or truncated at byte {pos}")
        size = struct.unpack(">I", data[pos + 4:pos + 8])[0]
        end = pos + 8 + size
        if end > len(data):
            raise MidiError(f"a track at byte {pos} is cut short")
        name, tick, status, p = "", 0, 0, pos + 8
        programs: dict[int, int] = {}
        open_notes: dict[tuple[int, int], list[int]] = {}
        notes: dict[int, list[tuple[int, float, float]]] = {}
        while p < end:
            delta, p = _read_varlen(data, p)
            tick += delta
            if p >= end:
                raise MidiError("a track ends inside an event")
            if data[p] & 0x80:
                status, p = data[p], p + 1
            elif not status:
                raise MidiError(f"running status without a status byte at byte {p}")
            if status == 0xFF:
                kind = data[p]
                size_, p = _read_varlen(data, p + 1)
                body = data[p:p + size_]
                p += size_
                if kind == 0x03 and not name:
                    name = body.decode("latin-1")
                elif kind == 0x58 and len(body) >= 2:
                    signatures.add(f"{body[0]}/{2 ** body[1]}")
                status = 0  # meta events cancel running status
                continue
            if status in (0xF0, 0xF7):
                size_, p = _read_varlen(data, p)
                p += size_
                status = 0
                continue
            kind, channel = status & 0xF0, status & 0x0F
            count = _DATA_BYTES.get(kind)
            if count is None or p + count > end:
                raise MidiError(f"an unknown or truncated event at byte {p}")
            args = data[p:p + count]
            p += count
            if kind == 0xC0:
                programs.setdefault(channel, args[0])
            elif kind == 0x90 and args[1] > 0:
                open_notes.setdefault((channel, args[0]), []).append(tick)
            elif kind in (0x80, 0x90):
                starts = open_notes.get((channel, args[0]))
                if starts:  # an off without an on is ignored
                    start = starts.pop(0)
                    notes.setdefault(channel, []).append(
                        (args[0], start / division, (tick - start) / division))
        for channel, played in sorted(notes.items()):
            if channel != 9:
                played = [n for n in played if n[2] > 0]
                parts.append(MidiPart(name=name, program=programs.get(channel, 0),
                                      notes=sorted(played, key=lambda n: (n[1], n[0]))))
        pos = end
    return MidiSong(parts=[part for part in parts if part.notes], time_signatures=signatures)


def parse_midi(data: bytes, name: str = "MIDI data") -> list[Note]:
    """The melody of a MIDI file; a file that does not parse is a MidiError naming it."""
    from music21 import converter

    try:
        score = converter.parseData(data, format="midi", forceSource=True)
    except Exception as exc:  # music21 raises many kinds on malformed MIDI
        raise MidiError(f"{name} is not a readable MIDI file ({type(exc).__name__}: {exc})"
                        ) from exc
    melody = melody_of_score(score)
    if not melody:
        raise MidiError(f"{name} holds no notes")
    return melody
