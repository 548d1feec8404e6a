"""A job stopped by SIGTERM and started again ends exactly where an unstopped one does."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import TINY

GENKILN = [sys.executable, "-m", "genkiln"]
STEPS = "40"


def opt_ml_tree(root: Path, data: Path) -> Path:
    (root / "input/config").mkdir(parents=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps(
        {**TINY, "max_steps": STEPS, "log_interval": "1", "checkpoint_interval": "7",
         "eval_interval": "1000",
         # Float results depend on the thread count: bit-for-bit needs the same one.
         "num_threads": "1"}))
    (root / "input/data").mkdir()
    (root / "input/data/train").symlink_to(data)
    (root / "checkpoints").mkdir()  # SageMaker creates it for jobs with a checkpoint config
    return root


def train(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GENKILN, "train", "--opt-ml", str(root)], capture_output=True,
                          text=True, timeout=300)


def test_resume_after_sigterm_matches_an_uninterrupted_run(tmp_path: Path,
                                                           text_dir: Path) -> None:
    straight = opt_ml_tree(tmp_path / "straight", text_dir)
    assert train(straight).returncode == 0

    stopped = opt_ml_tree(tmp_path / "stopped", text_dir)
    process = subprocess.Popen([*GENKILN, "train", "--opt-ml", str(stopped)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("step=12 "):
            process.send_signal(signal.SIGTERM)
            break
    process.stdout.read()
    assert process.wait(timeout=60) == 143
    assert "stopped by SIGTERM" in (stopped / "output/failure").read_text()
    saved = json.loads((stopped / "checkpoints/checkpoint.json").read_text())["step"]
    assert 12 <= saved < int(STEPS)

    (stopped / "output/failure").unlink()
    again = train(stopped)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from the checkpoint at step {saved}" in again.stdout
    assert f"step={saved + 1} " in again.stdout and f"step={saved} " not in again.stdout

    finished = load_file(str(straight / "model/model.safetensors"))
    resumed = load_file(str(stopped / "model/model.safetensors"))
    assert finished.keys() == resumed.keys()
    for name, tensor in finished.items():
        assert torch.equal(tensor, resumed[name]), name


def test_a_checkpoint_of_other_settings_is_refused(tmp_path: Path, text_dir: Path) -> None:
    root = opt_ml_tree(tmp_path / "job", text_dir)
    assert train(root).returncode == 0
    settings = json.loads((root / "input/config/hyperparameters.json").read_text())
    settings["learning_rate"] = "0.5"
    (root / "input/config/hyperparameters.json").write_text(json.dumps(settings))
    done = train(root)
    assert done.returncode == 2
    assert "checkpoint of a run with other settings" in (root / "output/failure").read_text()


def test_ctrl_c_on_a_local_run_ends_cleanly_and_the_same_command_resumes(
        tmp_path: Path, text_dir: Path) -> None:
    model = tmp_path / "model"
    command = [*GENKILN, "train", "--data", str(text_dir), "--model-dir", str(model),
               *[x for k, v in {**TINY, "max_steps": STEPS, "log_interval": "1",
                                "eval_interval": "1000"}.items() for x in (f"--{k}", v)]]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("step=5 "):
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            break
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 143
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    checkpoints = tmp_path / "model-checkpoint"
    assert "training stopped by Ctrl-C at step" in rest
    assert f"the checkpoint is in {checkpoints}; run the same command again" in rest
    saved = json.loads((checkpoints / "checkpoint.json").read_text())["step"]
    assert not model.exists()

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from the checkpoint at step {saved}" in again.stdout
    assert (model / "genkiln.json").is_file() and not checkpoints.exists()
