// A Standard MIDI File reader and a small WebAudio synth: no soundfont, no library.
// GenkilnMidi.parse(bytes) -> {notes: [{pitch, velocity, channel, track, start, end}],
// duration, tracks: [{name, notes}]}: times in seconds, tempo changes applied; `tracks`
// lists the track chunks that are named or hold notes (a silent voice still counts).
// GenkilnMidi.play(notes) -> a handle with stop() and playing() (true once the audio clock
// has passed the first note's start).
(function () {
  "use strict";

  function reader(bytes) {
    let pos = 0;
    return {
      get pos() { return pos; },
      set pos(p) { pos = p; },
      byte() {
        if (pos >= bytes.length) throw new Error("the MIDI file ends early");
        return bytes[pos++];
      },
      u16() { return (this.byte() << 8) | this.byte(); },
      u32() { return ((this.byte() << 24) >>> 0) + (this.byte() << 16) + (this.byte() << 8) + this.byte(); },
      vlq() {  // variable-length quantity: 7 bits a byte, high bit set on all but the last
        let value = 0;
        for (let i = 0; i < 4; i++) {
          const b = this.byte();
          value = (value << 7) | (b & 0x7f);
          if (!(b & 0x80)) return value;
        }
        throw new Error("a MIDI length is longer than 4 bytes");
      },
      text(n) { let s = ""; for (let i = 0; i < n; i++) s += String.fromCharCode(this.byte()); return s; },
    };
  }

  function parse(bytes) {
    const r = reader(bytes);
    if (r.text(4) !== "MThd") throw new Error("not a MIDI file (no MThd header)");
    const headerLength = r.u32();
    r.u16();  // format: 0, 1 (parallel tracks) and 2 read alike here
    const tracks = r.u16();
    const division = r.u16();
    if (division & 0x8000) throw new Error("SMPTE-timed MIDI files are not supported");
    r.pos = 8 + headerLength;

    const events = [];  // {tick, type: "on" | "off" | "tempo", ...}
    const names = [];
    for (let t = 0; t < tracks; t++) {
      if (r.text(4) !== "MTrk") throw new Error("a MIDI track chunk is missing");
      const end = r.u32() + r.pos;
      let tick = 0, status = 0;
      names.push("");
      while (r.pos < end) {
        tick += r.vlq();
        let b = r.byte();
        if (b === 0xff) {  // meta event
          const type = r.byte(), length = r.vlq(), start = r.pos;
          if (type === 0x51 && length === 3) {
            events.push({tick, type: "tempo", mpq: (r.byte() << 16) | (r.byte() << 8) | r.byte()});
          } else if (type === 0x03 && !names[t]) {
            names[t] = r.text(length);
          }
          r.pos = start + length;
          if (type === 0x2f) break;  // end of track
          continue;
        }
        if (b === 0xf0 || b === 0xf7) { const n = r.vlq(); r.pos += n; continue; }  // sysex
        if (b & 0x80) { status = b; } else { r.pos -= 1; b = status; }  // running status
        if (!status) throw new Error("a MIDI event has no status byte");
        const kind = status & 0xf0, channel = status & 0x0f;
        if (kind === 0xc0 || kind === 0xd0) { r.byte(); continue; }
        const a = r.byte(), v = r.byte();
        if (kind === 0x90 && v > 0) events.push({tick, type: "on", pitch: a, velocity: v, channel, track: t});
        else if (kind === 0x80 || kind === 0x90) events.push({tick, type: "off", pitch: a, channel, track: t});
      }
      r.pos = end;
    }

    // Ticks to seconds through the tempo map (default 120 bpm), in tick order.
    events.sort((x, y) => x.tick - y.tick || (x.type === "tempo" ? -1 : 0));
    let mpq = 500000, lastTick = 0, seconds = 0;
    const open = new Map(), notes = [];
    for (const e of events) {
      seconds += ((e.tick - lastTick) * mpq) / (division * 1e6);
      lastTick = e.tick;
      if (e.type === "tempo") { mpq = e.mpq; continue; }
      const key = (e.track * 16 + e.channel) * 128 + e.pitch;
      if (e.type === "on") {
        if (!open.has(key)) open.set(key, []);
        open.get(key).push({pitch: e.pitch, velocity: e.velocity, channel: e.channel, track: e.track,
                            start: seconds});
      } else if (open.has(key) && open.get(key).length) {
        const note = open.get(key).shift();
        note.end = seconds;
        notes.push(note);
      }
    }
    for (const waiting of open.values()) for (const note of waiting) { note.end = seconds; notes.push(note); }
    notes.sort((x, y) => x.start - y.start);
    const counts = names.map(() => 0);
    for (const n of notes) counts[n.track] += 1;
    return {notes, duration: notes.reduce((m, n) => Math.max(m, n.end), 0),
            tracks: names.map((name, t) => ({name, notes: counts[t]})).filter(k => k.notes > 0 || k.name)};
  }

  let context = null;

  function play(notes) {
    context = context || new (window.AudioContext || window.webkitAudioContext)();
    if (context.state === "suspended") context.resume();
    const master = context.createGain();
    master.gain.value = 0.25;
    master.connect(context.destination);
    const t0 = context.currentTime + 0.05;
    const voices = [];
    for (const n of notes) {
      const start = t0 + n.start, end = t0 + Math.max(n.end, n.start + 0.05);
      const gain = context.createGain();
      const peak = 0.2 + 0.8 * (n.velocity / 127);
      // A plucked envelope: fast attack, decay to a sustain level, short release.
      gain.gain.setValueAtTime(0, start);
      gain.gain.linearRampToValueAtTime(peak, start + 0.01);
      gain.gain.exponentialRampToValueAtTime(peak * 0.4, Math.max(start + 0.02, Math.min(end, start + 0.3)));
      gain.gain.setValueAtTime(peak * 0.4, end);
      gain.gain.linearRampToValueAtTime(0, end + 0.08);
      const osc = context.createOscillator();
      osc.type = n.channel === 9 ? "square" : "triangle";  // channel 10 is percussion
      osc.frequency.value = 440 * Math.pow(2, (n.pitch - 69) / 12);
      osc.connect(gain);
      gain.connect(master);
      osc.start(start);
      osc.stop(end + 0.1);
      voices.push(osc);
    }
    const first = t0 + notes.reduce((m, n) => Math.min(m, n.start), Infinity);
    return {
      startedAt: t0,
      voices: voices.length,
      playing() { return context.state === "running" && context.currentTime > first; },
      stop() {
        for (const v of voices) { try { v.stop(); } catch (e) { /* already stopped */ } }
        master.disconnect();
      },
    };
  }

  function drawRoll(canvas, notes, duration) {
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    if (!notes.length) return;
    const lo = Math.min(...notes.map(n => n.pitch)) - 1, hi = Math.max(...notes.map(n => n.pitch)) + 1;
    const x = s => (s / Math.max(duration, 0.001)) * canvas.width;
    const h = canvas.height / (hi - lo + 1);
    for (const n of notes) {
      g.fillStyle = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099"][n.channel % 5];
      g.fillRect(x(n.start), canvas.height - (n.pitch - lo + 1) * h, Math.max(2, x(n.end) - x(n.start) - 1), Math.max(2, h - 1));
    }
  }

  window.GenkilnMidi = {parse, play, drawRoll};
})();
