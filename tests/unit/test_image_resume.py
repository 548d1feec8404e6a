"""Families resume from a checkpoint exactly where an unstopped run would be (the
Transformer's resume through the entry point is tests/e2e/test_resume.py)."""

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import IMAGE_TINY
from tests.unit.test_rnn import TINY_RNN, melody
from training.config import TrainConfig
from training.hyperparameters import build
from training.loop import Stopped, fit, run_fingerprint
from training.models import get_family
from training.models.formats.midi import write_midi


def quiet(_: str) -> None:
    pass


#: What each family's checkpoint must hold besides torch's random state: networks (both of
#: the GAN's, in one module), optimizers (both of the GAN's), generators (data position,
#: noise) and the RBM's persistent chains. The schedule is a function of the step.
STATE = {
    "gan": {"batches", "model", "g_optimizer", "d_optimizer", "noise", "averaged_generator"},
    "vae": {"batches", "model", "optimizer"},
    "rbm": {"batches", "model", "optimizer", "gibbs", "chains"},
    "autoencoder": {"batches", "model", "optimizer"},
    "rnn": {"batches", "model", "optimizer"},
}


@pytest.fixture(scope="module")
def midi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("midi")
    for i, key in enumerate([60, 62, 64, 65, 67, 69]):
        (root / f"tune-{i}.mid").write_bytes(write_midi(melody(key)))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gan", "vae", "rbm", "autoencoder", "rnn"])
def test_resume_matches_an_uninterrupted_run(family: str, digits_dir: Path, midi_dir: Path,
                                             tmp_path: Path) -> None:
    spec = get_family(family)
    tiny = {**TINY_RNN, "dropout": "0.2"} if family == "rnn" else IMAGE_TINY[family]
    data = midi_dir if family == "rnn" else digits_dir
    values = {**spec.train_defaults, **tiny, "max_steps": "6",
              "eval_interval": "100", "checkpoint_interval": "100"}
    run, cfg = build(TrainConfig, values), build(spec.config_cls, values)
    fingerprint = run_fingerprint(run, cfg)

    def recipe() -> Any:
        return spec.build_recipe(run, cfg, train_dir=data, validation_dir=None,
                                 device=torch.device("cpu"), log=quiet)

    straight = recipe()
    fit(straight, run, log=quiet)

    stop = threading.Event()
    stopped = recipe()
    real_step = stopped.train_step

    def step_then_sigterm(lr: float) -> dict[str, float]:
        out: dict[str, float] = real_step(lr)
        stop.set()  # as SIGTERM would, after the first step
        return out

    stopped.train_step = step_then_sigterm
    with pytest.raises(Stopped):
        fit(stopped, run, stop=stop, log=quiet, checkpoints=tmp_path, fingerprint=fingerprint)

    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert set(meta["objects"]) == STATE[family]
    saved = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert "torch/rng" in saved
    if family == "gan":
        assert any(k.startswith("model/generator.") for k in saved)
        assert any(k.startswith("model/discriminator.") for k in saved)
        assert any(k.startswith("g_optimizer/state/") for k in saved)
        assert any(k.startswith("d_optimizer/state/") for k in saved)
        assert any(k.startswith("averaged_generator/") for k in saved)

    resumed, lines = recipe(), []
    fit(resumed, run, log=lines.append, checkpoints=tmp_path, fingerprint=fingerprint)
    assert "resumed from the checkpoint at step 1" in lines
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    if family == "gan":  # its averaged generator, which samples, resumes exactly too
        for key, value in straight.tensors().items():
            assert torch.equal(resumed.tensors()[key], value), key
