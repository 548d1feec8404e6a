"""Image families resume from a checkpoint exactly where an unstopped run would be."""

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import IMAGE_TINY
from training.config import TrainConfig
from training.hyperparameters import build
from training.loop import Stopped, fit, run_fingerprint
from training.models import get_family


def quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("family", ["gan", "vae", "rbm", "autoencoder"])
def test_resume_matches_an_uninterrupted_run(family: str, digits_dir: Path,
                                             tmp_path: Path) -> None:
    spec = get_family(family)
    values = {**spec.train_defaults, **IMAGE_TINY[family], "max_steps": "6",
              "eval_interval": "100", "checkpoint_interval": "100"}
    run, cfg = build(TrainConfig, values), build(spec.config_cls, values)
    fingerprint = run_fingerprint(run, cfg)

    def recipe() -> Any:
        return spec.recipe().Recipe(run, cfg, train_dir=digits_dir, validation_dir=None,
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

    resumed, lines = recipe(), []
    fit(resumed, run, log=lines.append, checkpoints=tmp_path, fingerprint=fingerprint)
    assert "resumed from the checkpoint at step 1" in lines
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
