"""The musegan family: piano rolls, MuseGAN's metrics, the networks, the artifact, serving."""

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from inference.server import create_app
from tests.conftest import MUSEGAN_TINY
from tests.unit.test_server import wait_ready
from training.artifact import load_artifact
from training.config import TrainConfig
from training.data.folder import scan_folder
from training.data.pianoroll import load_piece_folder, piece_of_midi
from training.entry import EXIT_BAD_INPUT, run_training
from training.evaluation.music import metric_gap, music_metrics
from training.hyperparameters import build
from training.local import emulate_opt_ml
from training.models import get_family
from training.models.formats.midi import read_midi, write_midi, write_tracks
from training.models.formats.notes import Note
from training.models.formats.pianoroll import (
    LOWEST,
    PITCHES,
    STEPS_PER_BAR,
    TRACKS,
    notes_to_roll,
    roll_to_notes,
    steps_to_quarters,
)
from training.models.musegan import MuseGAN, MuseGANConfig, Patch, Resize, from_artifact
from training.recipes.musegan import Recipe, melody_blind_bach

TUNE = [{"pitch": p, "start": i * 1.0, "duration": 1.0}
        for i, p in enumerate([67, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60])]


def programs_of(midi: bytes) -> list[int]:
    """The program change of each track of a MIDI file, read from its events."""
    from music21 import midi as m21midi

    file = m21midi.MidiFile()
    file.readstr(midi)
    return [int(event.data) for track in file.tracks for event in track.events
            if event.type == m21midi.ChannelVoiceMessages.PROGRAM_CHANGE
            and isinstance(event.data, int)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # These networks are small: on a shared CPU, one thread beats two by far.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- data -------------------------------------------------------------------------
def test_chorales_round_trip_through_midi(chorale_dir: Path) -> None:
    corpus = load_piece_folder(scan_folder(chorale_dir))
    assert len(corpus.pieces) == 8
    piece = corpus.pieces[0]
    roll = piece.roll()
    assert roll.shape == (4, piece.bars * STEPS_PER_BAR, PITCHES)
    # soprano above alto above tenor above bass, on average
    means = [np.mean([p for p, _, _ in track]) for track in piece.tracks]
    assert means == sorted(means, reverse=True)
    again = write_tracks([(name, 0, steps_to_quarters(notes))
                          for name, notes in zip(TRACKS, roll_to_notes(roll), strict=True)])
    assert np.array_equal(piece_of_midi(again, "again").roll(), roll)


def test_multi_track_midi_keeps_each_instrument() -> None:
    midi = write_tracks([("Melody", 73, [(72, 0.0, 1.0)]), ("Bass", 42, [(48, 0.0, 4.0)])],
                        tempo_bpm=90)
    assert programs_of(midi) == [73, 42]
    song = read_midi(midi)
    assert [(p.name, p.program, p.notes) for p in song.parts] == [
        ("Melody", 73, [(72, 0.0, 1.0)]), ("Bass", 42, [(48, 0.0, 4.0)])]
    assert song.time_signatures == {"4/4"}
    with pytest.raises(ValueError, match="General MIDI"):
        write_tracks([("Bad", 128, [])])


def test_roll_notes_round_trip_and_range() -> None:
    notes = [[(60, 0, 4), (60, 4, 6), (64, 2, 3)], [(20, 0, 16)], [(100, 8, 9)], []]
    roll = notes_to_roll(notes, 16)
    back = roll_to_notes(roll)
    assert back[0] == [(60, 0, 6), (64, 2, 3)]  # a repeated pitch merges: a roll's limit
    assert back[1] == [(20 + 24, 0, 16)] and back[2] == [(100 - 24, 8, 9)]  # folded in range
    assert all(LOWEST <= p < LOWEST + PITCHES for p, _, _ in back[1] + back[2])


def test_a_midi_file_without_four_parts_is_refused_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "solo.mid").write_bytes(write_midi([Note(60, 1.0), Note(62, 1.0)]))
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=MUSEGAN_TINY, data=data)
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    failure = opt_ml.failure_path.read_text()
    assert "solo.mid holds 1 part(s) with notes" in failure and "needs four" in failure


def test_a_corrupt_midi_file_fails_the_job_naming_it(tmp_path: Path, chorale_dir: Path
                                                      ) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "good.mid").write_bytes(next(chorale_dir.iterdir()).read_bytes())
    (data / "broken.mid").write_bytes(b"MThd garbage")
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=MUSEGAN_TINY, data=data)
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    assert "broken.mid is not a readable MIDI file" in opt_ml.failure_path.read_text()


# --- metrics ------------------------------------------------------------------------
def _roll(tracks: list[list[tuple[int, int, int]]], bars: int = 2) -> np.ndarray:
    return notes_to_roll(tracks, bars * STEPS_PER_BAR)[None]


def test_metrics_of_known_music() -> None:
    c_major = [(60, 0, 16), (64, 0, 16), (67, 0, 16)]
    rolls = _roll([[(72, 0, 32)], [(64, 0, 8), (65, 8, 16)],
                   [(60, 0, 1), (62, 1, 2), (60, 2, 3)], []])
    metrics = music_metrics(rolls)
    assert metrics["empty_bar_rate"] == pytest.approx(4 / 6)  # 2nd bars of alto, tenor; bass
    # alto: E, F in bar 1; tenor: C, D in bar 1 -> 2 pitch classes in each sounding bar
    assert metrics["pitch_classes"] == pytest.approx(2.0)
    assert metrics["qualified_note_rate"] == pytest.approx(2 / 5)  # the sixteenths don't
    same = music_metrics(_roll([c_major, c_major, c_major, c_major], bars=1))
    assert same["tonal_distance"] == pytest.approx(0.0)
    clash = music_metrics(_roll([[(60, 0, 16)], [(66, 0, 16)], [(61, 0, 16)], [(60, 0, 16)]],
                                bars=1))
    assert clash["tonal_distance"] > 0.5
    assert metric_gap(metrics, metrics) == 0.0
    assert metric_gap(same, metrics) > 0.0


# --- the networks ---------------------------------------------------------------------
def test_arrange_keeps_the_melody_and_is_seeded() -> None:
    torch.manual_seed(0)
    model = MuseGAN(MuseGANConfig(n_bars=2, g_width=16, d_width=16, latent_dim=4)).eval()
    melody = torch.zeros((2, 5, STEPS_PER_BAR, PITCHES))  # 5 bars: two and a half phrases
    melody[:, :, :, 30] = 1.0
    out = model.arrange(melody, generator=torch.Generator().manual_seed(3))
    assert out.shape == (2, 4, 5, STEPS_PER_BAR, PITCHES)
    assert torch.equal(out[:, 0], melody)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert out[:, 1:].sum(-1).max() <= 1  # each voice sings one note at a time
    dense = model.arrange(melody, generator=torch.Generator().manual_seed(3), threshold=0.01)
    assert dense[:, 1:].sum(-1).min() == 1  # ...and at a low threshold, always one
    again = model.arrange(melody, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    p3 = model.accompany(melody[:, :2], generator=torch.Generator().manual_seed(3))
    p4 = model.accompany(melody[:, :2], generator=torch.Generator().manual_seed(4))
    assert not torch.equal(p3, p4)  # the seed picks the noise
    real = (torch.rand(2, 4, 2, STEPS_PER_BAR, PITCHES) < 0.05).float()
    fake = model.full(real[:, 0], model.accompany(real[:, 0]))
    assert model.d_loss(real, fake).isfinite() and model.g_loss(fake).isfinite()


def test_family_is_registered_with_its_metrics() -> None:
    family = get_family("musegan")
    assert family.modalities == ("music",)
    names = {d["Name"] for d in family.metric_definitions}
    assert {"val_metric_gap", "val_tonal_distance_real", "bars_per_second",
            "blind_bach_metric_gap"} <= names


def test_the_melody_blind_baseline_puts_training_voices_under_held_out_melodies() -> None:
    rng = np.random.default_rng(0)
    held = rng.random((5, 4, 32, PITCHES)) < 0.05
    train = rng.random((9, 4, 32, PITCHES)) < 0.05
    blind = melody_blind_bach(held, train, seed=3)
    assert blind.shape == held.shape
    assert np.array_equal(blind[:, 0], held[:, 0])  # the held-out melodies, untouched
    for row in blind:  # each one's lower voices are one training phrase's, all three
        assert any(np.array_equal(row[1:], t[1:]) for t in train)
    assert np.array_equal(blind, melody_blind_bach(held, train, seed=3))
    # Bach's voices under the wrong melody still score as Bach's on the per-voice metrics
    # (empty bars, pitch classes, qualified notes): only the tonal distance can tell.
    real = music_metrics(train)
    assert music_metrics(melody_blind_bach(train, train, seed=1))["qualified_note_rate"] \
        == pytest.approx(real["qualified_note_rate"], abs=0.1)


# --- artifact -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(musegan_artifact: Path) -> Path:
    """The session's tiny MuseGAN (tests/conftest.py), trained once for every module."""
    return musegan_artifact


def test_training_writes_metrics_and_samples(artifact: Path) -> None:
    manifest = json.loads((artifact / "genkiln.json").read_text())
    assert manifest["family"] == "musegan" and manifest["modality"] == "music"
    assert manifest["data"]["pieces"] == 8 and manifest["data"]["validation_pieces"] == 2
    declared = set(get_family("musegan").metrics) - {"learning_rate"}
    assert declared <= set(manifest["metrics"]), declared - set(manifest["metrics"])
    assert 0 <= manifest["metrics"]["val_empty_bar_rate_real"] < 0.1  # Bach rarely rests a bar
    assert {"samples/sample-0.mid", "samples/pianoroll.png"} <= set(manifest["files"])
    sample = read_midi((artifact / "samples/sample-0.mid").read_bytes())
    assert [p.name for p in sample.parts][:1] == ["Melody"]  # empty tracks have no part
    with Image.open(artifact / "samples/pianoroll.png") as image:
        assert image.mode == "RGB" and image.height > image.width / 4


def test_save_load_round_trip(tmp_path: Path, chorale_dir: Path) -> None:
    values = {k: v for k, v in MUSEGAN_TINY.items() if k != "family"}
    run = build(TrainConfig, {**values, "family": "musegan"})
    cfg = build(MuseGANConfig, {k: v for k, v in values.items()
                                if k in ("g_width", "d_width", "latent_dim")})
    recipe = Recipe(run, cfg, train_dir=chorale_dir, validation_dir=None,
                    device=torch.device("cpu"), log=lambda _: None)
    recipe.train_step(1e-3)
    recipe.export(tmp_path / "model", config={}, metrics={})
    loaded = from_artifact(load_artifact(tmp_path / "model")).model
    melody = recipe.x_val[:3, 0].float().view(3, cfg.n_bars, STEPS_PER_BAR, PITCHES)
    recipe.model.eval()
    expected = recipe.model.arrange(melody, generator=torch.Generator().manual_seed(5))
    assert torch.equal(loaded.arrange(melody, generator=torch.Generator().manual_seed(5)),
                       expected)


def test_resizing_holds_notes_where_a_transposed_layer_need_not() -> None:
    """Repeated steps enter the resize layer, so without neighbours each pair of output
    steps is equal: a sixteenth-note step cannot differ from its partner."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 8)  # (N, T, P, C)
    held = Resize(8, 5, neighbours=False)(x)
    assert held.shape == (2, 8, 3, 5) and torch.equal(held[:, 0::2], held[:, 1::2])
    mixed = Resize(8, 5, neighbours=True)(x)
    assert mixed.shape == (2, 8, 3, 5) and not torch.equal(mixed[:, 0::2], mixed[:, 1::2])
    split = Patch(8, 5, axis=1, factor=-2)(x)
    assert not torch.equal(split[:, 0::2], split[:, 1::2])


def test_an_artifact_from_before_resizing_loads_with_transposed_layers(
        tmp_path: Path, chorale_dir: Path) -> None:
    values = {k: v for k, v in MUSEGAN_TINY.items() if k != "family"}
    run = build(TrainConfig, {**values, "family": "musegan"})
    cfg = build(MuseGANConfig, {"g_width": "16", "d_width": "16", "latent_dim": "8",
                                "upsample": "transposed"})
    recipe = Recipe(run, cfg, train_dir=chorale_dir, validation_dir=None,
                    device=torch.device("cpu"), log=lambda _: None)
    recipe.export(tmp_path / "model", config={}, metrics={})
    manifest_path = tmp_path / "model" / "genkiln.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["model_args"]["upsample"]  # as written before the field existed
    manifest_path.write_text(json.dumps(manifest))
    loaded = from_artifact(load_artifact(tmp_path / "model"))
    assert loaded.config.upsample == "transposed"
    assert isinstance(loaded.model.generator.up1, Patch)


# --- serving --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(artifact)) as c:
        wait_ready(c)
        yield c


def post(client: TestClient, payload: Any, **headers: str) -> Any:
    return client.post("/invocations", content=json.dumps(payload), headers=headers)


def test_accompany_a_note_list(client: TestClient) -> None:
    payload = {"melody": TUNE, "seed": 3, "threshold": 0.3,
               "programs": {"melody": 73, "bass": 42}}
    answer = post(client, payload)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["bars"] == 3 and body["seed"] == 3 and body["media_type"] == "audio/midi"
    assert [t["name"] for t in body["tracks"]] == list(TRACKS)
    assert [t["program"] for t in body["tracks"]] == [73, 0, 0, 42]
    assert body["tracks"][0]["notes"] == [{**n, "start": float(n["start"]),
                                           "duration": float(n["duration"])} for n in TUNE]
    parts = read_midi(base64.b64decode(body["midi"])).parts
    assert parts[0].notes == [(n["pitch"], n["start"], n["duration"]) for n in TUNE]
    assert programs_of(base64.b64decode(body["midi"])) == [73, 0, 0, 42]
    again = post(client, payload).json()
    assert again.pop("generation_id") != body.pop("generation_id")  # each answer is named
    assert again == body  # same seed, same music


def test_accompany_a_midi_melody_answering_midi_and_png(client: TestClient) -> None:
    tune = write_midi([Note(p, 0.5) for p in [72, 71, 69, 67, 65, 64, 62, 60] * 2])
    payload = {"melody_midi": base64.b64encode(tune).decode(), "seed": 1, "bars": 2}
    midi = post(client, payload, Accept="audio/midi")
    assert midi.status_code == 200 and midi.headers["content-type"] == "audio/midi"
    assert read_midi(midi.content).parts[0].name == "Melody"
    png = post(client, payload, Accept="image/png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.size == (2 * STEPS_PER_BAR * 4, PITCHES * 4)  # 2 bars, scale 4
    body = post(client, {**payload, "pianoroll": True}).json()
    assert base64.b64decode(body["pianoroll"]) == png.content
    assert body["tracks"][0]["notes"][0] == {"pitch": 72, "start": 0.0, "duration": 0.5}


LONG = [{"pitch": 60, "start": 4.0 * i, "duration": 4.0} for i in range(40)]


@pytest.mark.parametrize(("payload", "fragment"), [
    ({}, "send a melody: melody (a list of notes"),
    ({"melody": TUNE, "melody_midi": "AAAA"}, "give melody or melody_midi, not both"),
    ({"melody_midi": "not base64!"}, "melody_midi is not valid base64"),
    ({"melody_midi": base64.b64encode(b"nope").decode()}, "not a readable MIDI file"),
    ({"melody": []}, "the melody holds no notes"),
    ({"melody": LONG}, "the melody spans 40 bars of 4/4; this endpoint arranges at most 32"),
    ({"melody": TUNE, "bars": 33}, "bars: Input should be less than or equal to 32"),
    ({"melody": TUNE, "programs": {"bass": 200}}, "200 is not a General MIDI program"),
    ({"melody": TUNE, "programs": {"drums": 1}}, "unknown track 'drums'; the tracks are"),
    ({"melody": TUNE, "threshold": 1.5}, "threshold"),
    ({"melody": [{"pitch": 60, "start": 0}]}, "melody.0.duration: Field required"),
    ({"melody": TUNE, "temperature": 1}, "valid keys: bars, kind, melody"),
    ({"kind": "sample"}, "kind 'sample' is not served by this musegan model"),
    ({"melody": [{"pitch": 60, "start": 20, "duration": 1}], "bars": 2},
     "no note in its first 2 bar(s)"),
])
def test_bad_requests_say_what_to_change(client: TestClient, payload: Any, fragment: str
                                         ) -> None:
    answer = post(client, payload)
    assert answer.status_code == 422, answer.text
    assert fragment in answer.json()["error"]


def test_long_melodies_can_be_cut_to_bars(client: TestClient) -> None:
    answer = post(client, {"melody": LONG, "bars": 32, "seed": 1})
    assert answer.status_code == 200 and answer.json()["bars"] == 32


def test_the_playground_is_told_to_upload_a_melody_and_play_four_tracks(
        client: TestClient) -> None:
    from genkiln.playground.app import build_payload

    hints = client.get("/info").json()["playground"]
    assert hints["input"] == "midi" and hints["output"] == "midi"
    tune = write_midi([Note(p, 1.0) for p in [67, 69, 71, 72]])
    payload = build_payload(hints, prompt="", seed=4,
                            midi_base64=base64.b64encode(tune).decode())
    body = post(client, payload).json()
    assert [t["name"] for t in body["tracks"]] == list(TRACKS)
    assert len(read_midi(base64.b64decode(body["midi"])).parts) == 4
