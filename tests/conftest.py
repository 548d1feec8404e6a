"""Shared fixtures: tiny real data and a tiny real artifact trained through the entry point."""

from __future__ import annotations

import codecs
import json
import this
from pathlib import Path

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
