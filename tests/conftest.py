"""Shared fixtures: tiny real data and a tiny real artifact trained through the entry point."""

from __future__ import annotations

import codecs
import json
import this
from pathlib import Path
from typing import Any

import pytest

from training.contract import OptMl
from training.entry import run_training
from training.local import emulate_opt_ml

#: A model small enough to train in a second or two on a laptop CPU.
TINY = {
    "n_layer": "1", "n_head": "2", "n_embd": "32", "block_size": "48", "vocab_size": "300",
    "batch_size": "4", "max_steps": "8", "eval_interval": "4", "eval_batches": "2",
    "log_interval": "2", "warmup_steps": "2", "seed": "7",
}

ZEN = codecs.decode(this.s, "rot13")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Mark each test by its folder: tests/unit -> unit, tests/e2e -> e2e, ...
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in {"unit", "contract", "e2e", "infra"}:
            item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep the bundled-corpus cache out of the user's home, shared across the session.
    monkeypatch.setenv("GENKILN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    # Servers started by tests record their generations here, not in the system's temp.
    monkeypatch.setenv("GENKILN_FEEDBACK_DIR", str(tmp_path_factory.getbasetemp() / "feedback"))
    monkeypatch.delenv("GENKILN_FEEDBACK_URI", raising=False)
    monkeypatch.delenv("GENKILN_FEEDBACK", raising=False)


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user folder of text: .txt files and a .jsonl file, real English."""
    root = tmp_path_factory.mktemp("text")
    paragraphs = [p for p in ZEN.splitlines() if p.strip()]
    for i in range(0, len(paragraphs), 4):
        (root / f"zen-{i:02d}.txt").write_text("\n".join(paragraphs[i:i + 4]) + "\n")
    with (root / "more.jsonl").open("w") as f:
        for p in paragraphs:
            f.write(json.dumps({"text": p.upper()}) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> Path:
    """A real artifact: trained for a few steps on `text_dir` through run_training."""
    opt_ml = emulate_opt_ml(tmp_path_factory.mktemp("opt_ml"), hyperparameters=TINY,
                            data=text_dir)
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    return opt_ml.model_dir


@pytest.fixture
def opt_ml(tmp_path: Path) -> OptMl:
    return OptMl(tmp_path / "opt_ml")


#: Per image family: a network small enough to train in a second or two, on few images.
IMAGE_TINY = {
    family: {"family": family, "batch_size": "8", "max_steps": "4", "eval_interval": "2",
             "log_interval": "2", "warmup_steps": "1", "seed": "7", "val_fraction": "0.25",
             **extra}
    for family, extra in {
        "gan": {"latent_dim": "4", "g_width": "8", "d_width": "8"},
        "vae": {"latent_dim": "4", "width": "8"},
        "rbm": {"n_hidden": "16", "gibbs_steps": "5"},
        "autoencoder": {"latent_dim": "4", "width": "8"},
    }.items()
}


def write_digit_pngs(root: Path, *, classes: tuple[int, ...] = (3, 7), per_class: int = 12,
                     subfolders: bool = True) -> Path:
    """Real 8×8 digits from scikit-learn as PNG files, one subfolder per class."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in classes:
        folder = root / str(label) if subfolders else root
        folder.mkdir(parents=True, exist_ok=True)
        picks = np.flatnonzero(digits.target == label)[:per_class]
        for i in picks:
            pixels = (digits.images[i] / 16.0 * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}-{i}.png")
    return root


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user folder of grayscale PNG digits in class subfolders 3/ and 7/."""
    return write_digit_pngs(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def image_artifacts(tmp_path_factory: pytest.TempPathFactory, digits_dir: Path) -> Any:
    """family -> a real artifact trained for a few steps on `digits_dir` (built on demand)."""
    built: dict[str, Path] = {}

    def artifact(family: str) -> Path:
        if family not in built:
            opt_ml = emulate_opt_ml(tmp_path_factory.mktemp(f"opt_ml_{family}"),
                                    hyperparameters=IMAGE_TINY[family], data=digits_dir)
            assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
            built[family] = opt_ml.model_dir
        return built[family]

    return artifact


def write_chorale_midis(root: Path, count: int) -> Path:
    """The first ``count`` four-part 4/4 Bach chorales of music21's corpus as MIDI files
    (soprano, alto, tenor, bass tracks): real music in a user's folder."""
    from music21 import corpus

    from training.data.pianoroll import chorale_of
    from training.models.formats.midi import write_tracks
    from training.models.formats.pianoroll import TRACKS, steps_to_quarters

    root.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(corpus.getComposer("bach")):
        if written == count:
            break
        piece = chorale_of(corpus.parse(path, forceSource=True), path.name)
        if piece is not None and piece.bars >= 8:
            (root / f"{path.stem}.mid").write_bytes(write_tracks(
                [(name, 0, steps_to_quarters(notes))
                 for name, notes in zip(TRACKS, piece.tracks, strict=True)]))
            written += 1
    return root


@pytest.fixture(scope="session")
def chorale_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user folder of 8 Bach chorales as four-track MIDI files."""
    return write_chorale_midis(tmp_path_factory.mktemp("chorales"), 8)


#: A MuseGAN small enough to train in a second or two.
MUSEGAN_TINY = {"family": "musegan", "g_width": "16", "d_width": "16", "latent_dim": "8",
                "batch_size": "4", "max_steps": "4", "eval_interval": "2", "log_interval": "2",
                "warmup_steps": "1", "seed": "7", "val_fraction": "0.25"}


def train_on_one_thread(opt_ml: OptMl) -> Path:
    """Run the entry point in-process on one torch thread (small networks run faster so
    than on busy cores); the artifact's folder."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    finally:
        torch.set_num_threads(before)
    return opt_ml.model_dir


#: A diffusion model trained for a few steps on a tiny captioned folder (16×16 squares).
DIFFUSION_TINY = {"family": "diffusion", "max_steps": "3", "width": "16", "text_width": "32",
                  "text_layers": "1", "image_size": "16", "vocab_size": "300",
                  "max_prompt_tokens": "64", "steps": "3", "batch_size": "4",
                  "val_fraction": "0.25"}


@pytest.fixture(scope="session")
def diffusion_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.unit.test_diffusion import captioned_folder

    root = tmp_path_factory.mktemp("diffusion")
    return train_on_one_thread(emulate_opt_ml(root / "opt_ml", hyperparameters=DIFFUSION_TINY,
                                              data=captioned_folder(root / "data")))


@pytest.fixture(scope="session")
def musegan_artifact(tmp_path_factory: pytest.TempPathFactory, chorale_dir: Path) -> Path:
    """A MuseGAN trained for a few steps (MUSEGAN_TINY) on `chorale_dir`."""
    return train_on_one_thread(emulate_opt_ml(tmp_path_factory.mktemp("opt_ml_musegan"),
                                              hyperparameters=MUSEGAN_TINY, data=chorale_dir))


@pytest.fixture(scope="session")
def melody_rnn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A melody RNN trained for a few steps on scales in eight keys (MIDI files)."""
    from tests.unit.test_rnn import TINY_RNN, melody
    from training.models.formats.midi import write_midi

    data = tmp_path_factory.mktemp("melodies")
    for i, key in enumerate([60, 62, 64, 65, 67, 69, 55, 57]):
        (data / f"tune-{i}.mid").write_bytes(write_midi(melody(key)))
    return train_on_one_thread(emulate_opt_ml(tmp_path_factory.mktemp("opt_ml_rnn"),
                                              hyperparameters=TINY_RNN, data=data))


#: A racer trained for a few policy updates: enough to lap the bundled tracks at 1 m/s.
RACER_TINY = {"family": "racer", "max_steps": "4", "num_episodes_between_training": "10",
              "num_envs": "4", "num_epochs": "4", "eval_laps": "1", "eval_interval": "4",
              "seed": "7", "num_threads": "1"}


@pytest.fixture(scope="session")
def racer_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A racer trained for a few updates (RACER_TINY) on the bundled tracks."""
    return train_on_one_thread(emulate_opt_ml(tmp_path_factory.mktemp("opt_ml_racer"),
                                              hyperparameters=RACER_TINY))
