"""A training job fits its CPU threads by measuring its own steps, and undoes them."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import TINY
from training.config import TrainConfig
from training.hyperparameters import build
from training.models import get_family
from training.threads import fit_threads, undone, usable_cores


def recipe(text_dir: Path):  # type: ignore[no-untyped-def]
    family = get_family("transformer")
    values = {**family.train_defaults, **TINY}
    return family.build_recipe(build(TrainConfig, values), build(family.config_cls, values),
                               train_dir=text_dir, validation_dir=None,
                               device=torch.device("cpu"), log=lambda _: None)


def test_the_measured_steps_leave_no_trace(text_dir: Path) -> None:
    before = torch.get_num_threads()
    measured, untouched = recipe(text_dir), recipe(text_dir)
    lines: list[str] = []
    try:
        chosen = fit_threads(measured, lr=1e-3, requested=0, log=lines.append)
        assert chosen in {1, usable_cores()} and torch.get_num_threads() == chosen
        if usable_cores() > 1:
            assert lines and lines[0].startswith(f"threads: {chosen} (a step took")
        # Both now train alike: the measured steps changed no weight, moment or draw.
        torch.set_num_threads(1)
        torch.manual_seed(3)
        a = measured.train_step(1e-3)["train_loss"]
        torch.manual_seed(3)
        b = untouched.train_step(1e-3)["train_loss"]
        assert a == b
        for (name, x), y in zip(measured.model.state_dict().items(),
                                untouched.model.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    finally:
        torch.set_num_threads(before)


def test_a_set_count_or_several_processes_measure_nothing(text_dir: Path) -> None:
    before = torch.get_num_threads()
    r = recipe(text_dir)
    try:
        assert fit_threads(r, lr=1e-3, requested=3) == 3 == torch.get_num_threads()
        assert fit_threads(r, lr=1e-3, requested=0, processes=2) == max(1, usable_cores() // 2)
    finally:
        torch.set_num_threads(before)


def test_undone_restores_generators_and_torch_random_state() -> None:
    g = torch.Generator().manual_seed(5)
    net = torch.nn.Linear(2, 2)
    expected = (torch.rand(1, generator=torch.Generator().manual_seed(5)), net.weight.clone())
    state = torch.get_rng_state()
    with undone({"g": g, "net": net}):
        torch.rand(3, generator=g)
        torch.rand(3)
        net.weight.data.add_(1.0)
    assert torch.equal(torch.rand(1, generator=g), expected[0])
    assert torch.equal(net.weight, expected[1]) and torch.equal(torch.get_rng_state(), state)
