// The playground page: ask the model (through this playground's /api), show the answer as
// it streams, keep the latest two generations and send judgements about them.
(function () {
  "use strict";
  const $ = id => document.getElementById(id);
  // What a test (or a curious person in the console) can read: every generation so far,
  // and the output's length after each event of a stream was shown (with the network read
  // it came in: a small model may decode a whole answer before the first read).
  const state = window.playground = {
    info: null, hints: {}, generations: [], streamLog: [], busy: false, midi: null, audio: null,
    played: null, track: null, lap: null,
  };

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function newSeed() {  // a fresh seed that survives a JSON round trip through JavaScript
    const words = new Uint32Array(2);
    crypto.getRandomValues(words);
    return (words[0] & 0x1fffff) * 4294967296 + words[1];
  }

  function latest(back) { return state.generations[state.generations.length - 1 - (back || 0)]; }

  function refreshButtons() {
    const ready = state.info !== null && !state.busy;
    $("generate").disabled = !ready;
    $("regenerate").disabled = !ready || !latest();
    const canJudge = !state.busy && state.info && state.info.feedback && state.info.feedback.enabled;
    $("better").disabled = $("worse").disabled = !(canJudge && latest(1));
    $("thumbs-up").disabled = $("thumbs-down").disabled = !(canJudge && latest());
  }

  async function loadInfo() {
    try {
      const res = await fetch("/api/info");
      const info = await res.json();
      if (!res.ok) throw new Error(info.error || res.statusText);
      state.info = info;
      state.hints = info.playground || {};
      $("model").textContent = `${info.family} · ${info.modality}` +
        (info.feedback && info.feedback.enabled ? " · feedback recorded" : " · feedback off");
      $("text-input").hidden = state.hints.input !== "text";
      $("midi-input").hidden = state.hints.input !== "midi";
      $("track-input").hidden = state.hints.input !== "track";
      for (const name of state.hints.tracks || []) {
        const option = document.createElement("option");
        option.value = option.textContent = name;
        $("track").appendChild(option);
      }
      $("template").value = JSON.stringify(state.hints.template || {}, null, 2);
    } catch (err) {
      $("model").textContent = "the model is not reachable: " + err.message;
    }
    refreshButtons();
  }

  function template() {
    const text = $("template").value.trim();
    if (!text) return undefined;
    try { return JSON.parse(text); } catch (err) { throw new Error("the request template is not JSON: " + err.message); }
  }

  function showLap(answer) {
    $("lap-output").hidden = false;
    const result = answer.completed ? `lap completed in ${answer.lap_time.toFixed(2)} s`
      : `${answer.progress.toFixed(0)}% of the lap` + (answer.off_track ? ", then off track" : "");
    $("output").textContent = `${answer.track.name} (${answer.track.length.toFixed(1)} m), ` +
      `${answer.driver}: ${result}; mean speed ${answer.mean_speed.toFixed(2)} m/s`;
    if (state.lap && state.lap.handle) state.lap.handle.stop();
    state.lap = {answer, steps: answer.trajectory.x.length, shown: 0};
    state.lap.handle = GenkilnLap.play($("lap"), answer, step => { state.lap.shown = step; });
  }

  // Pictures side by side (a prompt's n images, or their previews as they develop).
  function showImages(images, caption) {
    const box = $("images");
    box.replaceChildren(...images.map((data, i) => {
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + data;
      img.alt = `${caption} ${i + 1}`;
      return img;
    }));
    box.dataset.caption = caption;
    box.hidden = false;
  }

  function showOutput(output, answer) {
    $("image").hidden = true;
    $("images").hidden = true;
    $("midi-output").hidden = true;
    $("lap-output").hidden = true;
    if (state.hints.output === "lap" && answer && answer.trajectory) { showLap(answer); return; }
    if (output.text !== undefined) { $("output").textContent = output.text; return; }
    $("output").textContent = "";
    if (output.images && output.images.length > 1) {
      showImages(output.images, "image");
    } else if (output.png_base64) {
      $("image").src = "data:image/png;base64," + output.png_base64;
      $("image").hidden = false;
    } else if (output.midi_base64) {
      const song = GenkilnMidi.parse(Uint8Array.from(atob(output.midi_base64), c => c.charCodeAt(0)));
      state.outputSong = song;
      $("midi-output").hidden = false;
      $("midi-output").dataset.tracks = song.tracks.length;
      GenkilnMidi.drawRoll($("roll"), song.notes, song.duration);
      const parts = song.tracks.map(t => `${t.name || "untitled"} (${t.notes})`).join(", ");
      $("output").textContent = `${song.tracks.length} track${song.tracks.length === 1 ? "" : "s"}: ` +
        `${parts}; ${song.notes.length} notes, ${song.duration.toFixed(1)} s`;
    } else {
      $("output").textContent = JSON.stringify(output.json !== undefined ? output.json : output, null, 2);
    }
  }

  async function generate(seed) {
    if (state.busy) return;
    let body;
    try {
      body = {prompt: $("prompt").value, seed, request: template()};
      if (state.hints.input === "midi" && state.midi) body.midi_base64 = state.midi;
      if (state.hints.input === "track") body.track = state.track || $("track").value;
    } catch (err) { status(err.message, true); return; }
    state.busy = true;
    state.streamLog = [];
    refreshButtons();
    status("generating…");
    $("output").textContent = "";
    $("meta").textContent = "";
    let done = null;
    try {
      const res = await fetch("/api/generate", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      if (!res.ok) throw new Error((await res.json()).error || res.statusText);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (let read = 0; ; read++) {
        const {value, done: ended} = await reader.read();
        if (value) pending += decoder.decode(value, {stream: true});
        const lines = pending.split("\n");
        pending = lines.pop();
        for (const line of lines) {
          if (!line.trim()) continue;
          const event = JSON.parse(line);
          if (event.type === "token") $("output").textContent += event.text;
          else if (event.type === "preview") {
            showImages(event.images, "preview");
            status(`denoising… step ${event.step} of ${event.steps}`);
          }
          else if (event.type === "done") done = event;
          else if (event.type === "error") throw new Error(event.error);
          state.streamLog.push({length: $("output").textContent.length, done: done !== null,
                                read, preview: event.type === "preview" ? event.step : null});
        }
        if (ended) break;
      }
      if (!done) throw new Error("the answer ended early");
      showOutput(done.output, done.answer);
      const generation = {id: done.generation_id, seed: done.seed, output: done.output};
      state.generations.push(generation);
      $("meta").textContent = `generation ${generation.id} · seed ${generation.seed}`;
      const item = document.createElement("li");
      item.textContent = `${generation.id} (seed ${generation.seed})`;
      $("history").prepend(item);
      status("done");
    } catch (err) {
      status(err.message, true);
    } finally {
      state.busy = false;
      refreshButtons();
    }
  }

  async function sendFeedback(feedback) {
    const comment = $("comment").value.trim();
    if (comment) feedback.comment = comment;
    try {
      const res = await fetch("/api/feedback", {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(feedback)});
      const answer = await res.json();
      if (!res.ok) throw new Error(answer.error || res.statusText);
      state.lastFeedback = answer.feedback;
      status(`recorded ${answer.feedback.feedback_id}`);
      $("comment").value = "";
    } catch (err) {
      status("feedback not recorded: " + err.message, true);
    }
  }

  function prefer(latestIsBetter) {
    const a = latest(), b = latest(1);
    if (!a || !b) return;
    sendFeedback(latestIsBetter ? {chosen: a.id, rejected: b.id} : {chosen: b.id, rejected: a.id});
  }

  function playSong(song) {
    if (state.audio) state.audio.stop();
    state.audio = GenkilnMidi.play(song.notes);
    // What was scheduled: a test reads it, and state.audio.playing() once the sound is due.
    state.played = {tracks: song.tracks.length, notes: song.notes.length, voices: state.audio.voices};
    $("stop-audio").hidden = false;
  }

  $("generate").addEventListener("click", () => generate(newSeed()));
  $("regenerate").addEventListener("click", () => generate(newSeed()));
  $("better").addEventListener("click", () => prefer(true));
  $("worse").addEventListener("click", () => prefer(false));
  $("thumbs-up").addEventListener("click", () => sendFeedback({generation_id: latest().id, rating: 5}));
  $("thumbs-down").addEventListener("click", () => sendFeedback({generation_id: latest().id, rating: 1}));
  $("play-output").addEventListener("click", () => state.outputSong && playSong(state.outputSong));
  $("play-upload").addEventListener("click", () => state.uploadSong && playSong(state.uploadSong));
  $("stop-audio").addEventListener("click", () => {
    if (state.audio) state.audio.stop();
    state.audio = null;
    $("stop-audio").hidden = true;
  });
  $("prompt").addEventListener("keydown", e => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(newSeed());
  });
  $("replay").addEventListener("click", () => state.lap && showLap(state.lap.answer));
  $("track").addEventListener("change", () => { state.track = null; });
  $("track-file").addEventListener("change", async () => {
    const file = $("track-file").files[0];
    if (!file) return;
    try {
      state.track = JSON.parse(await file.text());
      status(`${file.name}: ${(state.track.waypoints || []).length} waypoints`);
    } catch (err) { state.track = null; status(`${file.name}: not JSON (${err.message})`, true); }
  });
  $("midi-file").addEventListener("change", async () => {
    const file = $("midi-file").files[0];
    if (!file) return;
    const bytes = new Uint8Array(await file.arrayBuffer());
    try {
      state.uploadSong = GenkilnMidi.parse(bytes);
    } catch (err) { status(`${file.name}: ${err.message}`, true); return; }
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    state.midi = btoa(binary);
    $("play-upload").disabled = false;
    status(`${file.name}: ${state.uploadSong.notes.length} notes`);
  });

  loadInfo();
})();
