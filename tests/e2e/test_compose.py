"""Composing end to end: the musegan family (`genkiln train`, `genkiln serve` over HTTP,
quality), and the rnn family's continuation as a second way to accompany a melody."""

import base64
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image

from tests.conftest import MUSEGAN_TINY
from tests.e2e.servers import GENKILN, Served, serving
from tests.e2e.test_image_families import flags
from training.entry import run_training
from training.local import emulate_opt_ml
from training.models.formats.midi import read_midi, write_midi
from training.models.formats.notes import Note
from training.models.formats.pianoroll import PITCHES, STEPS_PER_BAR

#: Small networks run far faster on one thread than on two busy cores.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
TUNE = [{"pitch": p, "start": i * 0.5, "duration": 0.5}
        for i, p in enumerate([72, 71, 69, 67, 69, 71, 72, 74, 76, 74, 72, 71, 69, 67, 65, 64])]


def test_train_on_chorale_midis_then_serve_over_http(tmp_path: Path, chorale_dir: Path) -> None:
    model = tmp_path / "model"
    done = subprocess.run([*GENKILN, "train", "--data", str(chorale_dir), "--model-dir",
                           str(model), *flags(MUSEGAN_TINY)],
                          capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("step=0 val_empty_bar_rate_real=") for line in lines)
    assert any(line.startswith("step=4 ") and "val_metric_gap=" in line for line in lines)
    assert any("bars_per_second=" in line for line in lines)

    with serving(model, env=ONE_THREAD) as served:
        url = served.url
        request = {"melody": TUNE, "seed": 2, "programs": {"melody": 73, "bass": 42}}
        body = httpx.post(f"{url}/invocations", json=request, timeout=30).json()
        assert [t["name"] for t in body["tracks"]] == ["melody", "alto", "tenor", "bass"]
        midi = httpx.post(f"{url}/invocations", json=request, timeout=30,
                          headers={"Accept": "audio/midi"})
        assert midi.status_code == 200 and midi.content == base64.b64decode(body["midi"])
        assert read_midi(midi.content).parts[0].program == 73
        png = httpx.post(f"{url}/invocations", json=request, timeout=30,
                         headers={"Accept": "image/png"})
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        bad = httpx.post(f"{url}/invocations", json={"melody_midi": "AAAA"}, timeout=30)
        assert bad.status_code == 422 and "not a readable MIDI file" in bad.json()["error"]


def test_a_short_run_moves_toward_the_chorales(tmp_path: Path, chorale_dir: Path) -> None:
    """After a short run the generated accompaniment's metrics are nearer Bach's than the
    untrained generator's are: overall, and in how well the voices agree in harmony."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt_ml = emulate_opt_ml(tmp_path, data=chorale_dir, hyperparameters={
            "family": "musegan", "seed": "3", "max_steps": "100", "batch_size": "8",
            "eval_interval": "1000", "log_interval": "50", "val_fraction": "0.25"})
        assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    finally:
        torch.set_num_threads(before)
    metrics = json.loads((opt_ml.model_dir / "genkiln.json").read_text())["metrics"]
    assert metrics["val_metric_gap"] < metrics["val_metric_gap_untrained"], metrics
    real = metrics["val_tonal_distance_real"]
    assert abs(metrics["val_tonal_distance"] - real) < \
        abs(metrics["val_tonal_distance_untrained"] - real), metrics


# --- the rnn family's continuation as an accompaniment ----------------------------------
@pytest.fixture(scope="module")
def melody_server(melody_rnn_artifact: Path) -> Iterator[Served]:
    """`genkiln serve` for a melody RNN trained for a few steps on scales in eight keys."""
    with serving(melody_rnn_artifact, env=ONE_THREAD) as served:
        yield served


def invoke(served: Served, payload: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{served.url}/invocations", json=payload, headers=headers, timeout=30)


def test_the_rnn_continues_a_melody_on_a_second_track(melody_server: Served) -> None:
    request = {"melody": TUNE, "bars": 2, "seed": 5, "programs": {"melody": 73,
                                                                  "continuation": 71}}
    answer = invoke(melody_server, request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == "accompany" and body["seed"] == 5 and body["bars"] == 2
    melody_track, continuation = body["tracks"]
    assert (melody_track["name"], continuation["name"]) == ("melody", "continuation")
    # The melody is kept note for note; the model's notes follow it, for two bars.
    assert melody_track["notes"] == [{**n, "start": float(n["start"]),
                                      "duration": float(n["duration"])} for n in TUNE]
    assert body["continuation_start"] == 8.0
    added = [(n["pitch"], n["start"], n["duration"]) for n in continuation["notes"]]
    assert added and all(start >= 8.0 and start + length <= 16.0
                         for _, start, length in added), added
    parts = read_midi(base64.b64decode(body["midi"])).parts
    assert [(p.name, p.program) for p in parts] == [("Melody", 73), ("Continuation", 71)]
    assert parts[0].notes == [(n["pitch"], n["start"], n["duration"]) for n in TUNE]
    assert parts[1].notes == added

    again = invoke(melody_server, request).json()
    assert again.pop("generation_id") != body.pop("generation_id")
    assert again == body  # same seed, same music
    others = {json.dumps(invoke(melody_server, {**request, "seed": seed}).json()["tracks"][1])
              for seed in (6, 7, 8)}
    assert len(others | {json.dumps(continuation)}) > 1, "the seed changes the answer"


def test_the_rnn_takes_a_midi_melody_and_answers_midi_or_a_piano_roll(
        melody_server: Served) -> None:
    tune = [72, 71, 69, 67, 65, 64, 62, 60]
    payload = {"melody_midi": base64.b64encode(write_midi([Note(p, 0.5) for p in tune]))
               .decode(), "bars": 1, "seed": 2}
    midi = invoke(melody_server, payload, Accept="audio/midi")
    assert midi.status_code == 200 and midi.headers["content-type"] == "audio/midi"
    first, second = read_midi(midi.content).parts
    assert [p for p, _, _ in first.notes] == tune and second.notes
    assert min(start for _, start, _ in second.notes) >= 4.0  # after the melody's 4 beats
    png = invoke(melody_server, payload, Accept="image/png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.size == (2 * STEPS_PER_BAR * 4, PITCHES * 4)  # melody + 1 bar, scale 4
    body = invoke(melody_server, {**payload, "pianoroll": True}).json()
    assert base64.b64decode(body["pianoroll"]) == png.content
    assert base64.b64decode(body["midi"]) == midi.content


def test_the_playground_offers_the_rnn_the_same_way(melody_server: Served) -> None:
    from genkiln.playground.app import build_payload

    hints = httpx.get(f"{melody_server.url}/info", timeout=10).json()["playground"]
    assert (hints["input"], hints["input_field"], hints["output"]) == \
        ("midi", "melody_midi", "midi")
    tune = write_midi([Note(p, 1.0) for p in [67, 69, 71, 72]])
    body = invoke(melody_server, build_payload(
        hints, prompt="", seed=4, midi_base64=base64.b64encode(tune).decode())).json()
    assert len(read_midi(base64.b64decode(body["midi"])).parts) == 2


@pytest.mark.parametrize(("payload", "status", "fragment"), [
    ({"melody_midi": "not base64!"}, 422, "melody_midi is not valid base64"),
    ({"melody_midi": base64.b64encode(b"MThd garbage").decode()}, 422,
     "not a readable MIDI file"),
    ({"melody": []}, 422, "the melody holds no notes; send at least one note"),
    ({"kind": "accompany"}, 422, "send a melody: melody (a list of notes"),
    ({"melody": TUNE, "bars": 0}, 422, "bars: Input should be greater than or equal to 1"),
    ({"melody": TUNE, "bars": 33}, 422, "bars: Input should be less than or equal to 32"),
    ({"melody": TUNE, "programs": {"alto": 1}}, 422,
     "unknown track 'alto'; the tracks are melody, continuation"),
    ({"melody": TUNE, "threshold": 0.5}, 422, "valid keys: bars, kind, melody"),
    ({"kind": "arrange", "melody": TUNE}, 422,
     "it answers kind \"continue\" and kind \"accompany\""),
])
def test_bad_accompaniment_requests_say_what_to_change(
        melody_server: Served, payload: Any, status: int, fragment: str) -> None:
    answer = invoke(melody_server, payload)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert fragment in error and "Traceback" not in error
