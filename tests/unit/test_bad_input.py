"""Bad data and bad settings end a job through the real entry point: a one-line reason in
output/failure naming the file or key, exit 2, and nothing in the model dir.

The corrupt image (tests/e2e/test_image_families.py), the unreadable MIDI file
(tests/unit/test_rnn.py), the unknown family and the unknown key (tests/unit/test_contract.py)
are checked beside the data they need; these are the other cases.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TINY
from training.contract import OptMl
from training.entry import EXIT_BAD_INPUT, run_training
from training.local import emulate_opt_ml


def failed_cleanly(opt_ml: OptMl) -> str:
    """Run the job; check it failed as SageMaker needs; return its reason."""
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    reason = opt_ml.failure_path.read_text()
    assert reason.count("\n") == 1 and reason.endswith("\n")  # one line: the FailureReason
    assert "Traceback" not in reason
    assert not opt_ml.model_dir.exists() or list(opt_ml.model_dir.iterdir()) == []
    return reason


def test_a_non_utf8_text_file_is_named(tmp_path: Path, text_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for path in text_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    (data / "notes-latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=TINY, data=data)
    assert "notes-latin1.txt is not UTF-8 text" in failed_cleanly(opt_ml)


def test_an_empty_channel_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # folders, but not one file
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=TINY, data=empty)
    reason = failed_cleanly(opt_ml)
    assert reason.startswith("channel 'train' is declared but") and "holds no files" in reason


def test_an_out_of_range_hyperparameter_is_named(tmp_path: Path, text_dir: Path) -> None:
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={**TINY, "dropout": "1.5"},
                            data=text_dir)
    assert failed_cleanly(opt_ml).startswith("dropout must be in [0, 1)")


def test_an_out_of_range_setting_in_hyperparameters_json_is_named(tmp_path: Path,
                                                                  text_dir: Path) -> None:
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters=TINY, data=text_dir)
    # As SageMaker writes it: every value a string.
    opt_ml.hyperparameters_path.write_text(json.dumps({**TINY, "processes_per_host": "-2"}))
    assert failed_cleanly(opt_ml).startswith(
        "processes_per_host must be 0 (one per GPU) or positive")
