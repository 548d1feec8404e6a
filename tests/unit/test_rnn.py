"""The RNN family: melody data and MIDI, training through the entry point, serving."""

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from inference.server import create_app
from tests.unit.test_server import sse_events, wait_ready
from training.contract import OptMl
from training.data.music import in_key_share
from training.entry import EXIT_BAD_INPUT, run_training
from training.local import emulate_opt_ml
from training.models.formats.midi import parse_midi, write_midi
from training.models.formats.notes import EventVocabulary, Note
from training.models.rnn import RNNConfig, SequenceRNN, grammar

TINY_RNN = {"family": "rnn", "n_embd": "16", "hidden_size": "32", "n_layer": "1",
            "seq_len": "16", "batch_size": "8", "max_steps": "30", "eval_interval": "15",
            "eval_batches": "2", "log_interval": "10", "warmup_steps": "2",
            "learning_rate": "0.01", "seed": "3", "val_fraction": "0.25"}
C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def melody(root: int) -> list[Note]:
    up = [Note(root + step - 60, 0.5) for step in C_MAJOR]
    return [*up, *reversed(up), Note(None, 1.0), *up[::2], Note(root, 2.0)]


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("midi")
    for i, key in enumerate([60, 62, 64, 65, 67, 69, 55, 57]):
        (root / f"tune-{i}.mid").write_bytes(write_midi(melody(key)))
    return root


@pytest.fixture(scope="module")
def melody_artifact(tmp_path_factory: pytest.TempPathFactory, midi_dir: Path) -> Path:
    opt_ml = emulate_opt_ml(tmp_path_factory.mktemp("opt_ml"), hyperparameters=TINY_RNN,
                            data=midi_dir)
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    return opt_ml.model_dir


def test_midi_round_trip_through_music21() -> None:
    notes = [Note(60, 1.0), Note(None, 0.5), Note(67, 0.25), Note(72, 4.0)]
    assert parse_midi(write_midi(notes, program=40)) == notes


def test_vocabulary_round_trip() -> None:
    vocab = EventVocabulary()
    notes = melody(62)
    ids = vocab.encode(notes)
    assert ids[0] == ids[-1] == vocab.end_id and vocab.decode(ids) == notes


def test_in_key_share() -> None:
    primer = melody(60)
    assert in_key_share(primer, [Note(p, 1.0) for p in C_MAJOR]) == 1.0
    chromatic = [Note(p, 1.0) for p in range(60, 72)]
    assert in_key_share(primer, chromatic) == pytest.approx(7 / 12)


def test_grammar_keeps_melodies_well_formed() -> None:
    vocab = EventVocabulary()
    torch.manual_seed(0)
    model = SequenceRNN(RNNConfig(vocab_size=vocab.size, n_embd=8, hidden_size=8, n_layer=1,
                                  seq_len=8)).eval()
    durations = set(vocab.duration_ids)
    checked = 0
    for seed in range(5):
        tokens = [t.id for t in model.generate(vocab.encode(melody(60), close=False),
                                               max_new_tokens=40, temperature=2.0,
                                               generator=torch.Generator().manual_seed(seed),
                                               allowed=grammar(vocab))]
        if vocab.end_id in tokens:  # the melody ends there: nothing after it is sung
            tokens = tokens[:tokens.index(vocab.end_id) + 1]
        for previous, token in zip([vocab.index["D0.5"], *tokens], tokens, strict=False):
            if token == vocab.end_id:
                assert previous in durations, "a melody ends after a note's duration"
            else:
                assert (token in durations) == (previous not in durations)
            checked += 1
    assert checked >= 40


def test_trains_on_midi_and_beats_untrained(melody_artifact: Path) -> None:
    manifest = json.loads((melody_artifact / "genkiln.json").read_text())
    assert manifest["family"] == "rnn" and manifest["modality"] == "music"
    metrics = manifest["metrics"]
    untrained_perplexity = EventVocabulary().size  # uniform guessing
    assert metrics["val_perplexity"] < untrained_perplexity / 4
    assert 0.0 <= metrics["in_key_share"] <= 1.0
    assert "samples/sample-0.mid" in manifest["files"]
    assert parse_midi((melody_artifact / "samples/sample-0.mid").read_bytes())


def test_corrupt_midi_fails_the_job_naming_the_file(tmp_path: Path, midi_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for path in midi_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    (data / "broken.mid").write_bytes(b"MThd garbage")
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=TINY_RNN, data=data)
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    reason = OptMl(opt_ml.root).failure_path.read_text()
    assert "broken.mid is not a readable MIDI file" in reason and reason.count("\n") == 1
    assert list(opt_ml.model_dir.iterdir()) == []


@pytest.fixture(scope="module")
def melody_client(melody_artifact: Path) -> Any:
    with TestClient(create_app(melody_artifact)) as client:
        wait_ready(client)
        yield client


def post(client: TestClient, payload: Any, **headers: str) -> Any:
    return client.post("/invocations", content=json.dumps(payload), headers=headers)


def test_continue_a_melody(melody_client: TestClient) -> None:
    primer = [{"pitch": p, "duration": 0.5} for p in C_MAJOR[:5]]
    payload = {"kind": "continue", "primer": primer, "max_new_notes": 12, "seed": 4}
    answer = post(melody_client, payload)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert 1 <= len(body["notes"]) <= 12 and body["seed"] == 4
    midi_notes = parse_midi(base64.b64decode(body["midi"]))
    assert [n.pitch for n in midi_notes[:5]] == C_MAJOR[:5]
    again = post(melody_client, payload).json()
    assert again.pop("generation_id") != body.pop("generation_id")  # each one is named
    assert again == body  # same seed, same melody


def test_continue_a_midi_primer_as_midi(melody_client: TestClient) -> None:
    primer = base64.b64encode(write_midi(melody(62)[:6])).decode()
    answer = post(melody_client, {"primer_midi": primer, "max_new_notes": 4, "seed": 1},
                  Accept="audio/midi")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "audio/midi"
    assert len(parse_midi(answer.content)) >= 6


@pytest.mark.parametrize(("payload", "fragment"), [
    ({"kind": "sample"}, "kind 'sample' is not served by this melody model"),
    ({"inputs": "hello"}, "inputs: Extra inputs are not permitted"),
    ({"primer": [{"pitch": 200, "duration": 1}]}, "primer.0.pitch"),
    ({"primer_midi": "not base64!"}, "primer_midi is not valid base64"),
    ({"primer_midi": base64.b64encode(b"nope").decode()}, "not a readable MIDI file"),
    ({"primer": [{"pitch": 60, "duration": 1}], "primer_midi": "AAAA"}, "not both"),
    ({"max_new_notes": 0}, "max_new_notes"),
])
def test_bad_melody_requests(melody_client: TestClient, payload: Any, fragment: str) -> None:
    answer = post(melody_client, payload)
    assert answer.status_code == 422
    assert fragment in answer.json()["error"]


def test_text_rnn_serves_tgi_requests(tmp_path: Path, text_dir: Path) -> None:
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={**TINY_RNN, "vocab_size": "300",
                                                       "val_fraction": "0.3"}, data=text_dir)
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    manifest = json.loads((opt_ml.model_dir / "genkiln.json").read_text())
    assert manifest["modality"] == "text"
    assert manifest["metrics"]["val_perplexity"] < manifest["model_args"]["vocab_size"]
    metrics = manifest["metrics"]
    assert math.isfinite(metrics["ngram_perplexity"])
    # Bits per character: the same held-out nats, counted per character of text.
    per_token = metrics["val_bits_per_char"] / (metrics["val_loss"] / math.log(2))
    assert per_token == pytest.approx(
        metrics["ngram_bits_per_char"] / math.log2(metrics["ngram_perplexity"]))
    assert 0 < per_token < 1  # tokens per character: BPE tokens hold a character or more
    with TestClient(create_app(opt_ml.model_dir)) as client:
        wait_ready(client)
        answer = post(client, {"inputs": "Beautiful", "stream": True,
                               "parameters": {"max_new_tokens": 5, "seed": 2}})
        events = sse_events(answer.text)
        assert events[-1]["details"]["generated_tokens"] == len(events)
