"""Two data-parallel processes (gloo) train as one process does at the same global batch,
write the artifact once, and resume exactly after SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import IMAGE_TINY, TINY
from training.contract import OptMl
from training.entry import EXIT_BAD_INPUT, run_training
from training.local import emulate_opt_ml

GENKILN = [sys.executable, "-m", "genkiln"]
#: Enough steps that a SIGTERM sent at step 4 lands before the run ends on a fast machine.
STEPS = 40
#: Largest difference allowed between the 1- and 2-process train_loss at any logged step.
#: Both see the same global batch and the same weights; only the order of floating-point
#: sums differs (a mean of 4 rows, against the mean of two 2-row means), ~1e-7 per step.
LOSS_TOLERANCE = 1e-4
SETTINGS = {**TINY, "max_steps": str(STEPS), "log_interval": "1", "eval_interval": "1000",
            "checkpoint_interval": "3"}


def losses(log: str) -> dict[int, float]:
    return {int(m[1]): float(m[2])
            for m in re.finditer(r"^step=(\d+) train_loss=(\S+)", log, re.MULTILINE)}


def rates(log: str) -> list[float]:
    return [float(r) for r in re.findall(r"tokens_per_second=(\S+)", log)]


def opt_ml_tree(root: Path, data: Path, processes: int) -> Path:
    (root / "input/config").mkdir(parents=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps(
        {**SETTINGS, "processes_per_host": str(processes)}))
    (root / "input/data").mkdir()
    (root / "input/data/train").symlink_to(data)
    (root / "checkpoints").mkdir()
    return root


def train(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GENKILN, "train", "--opt-ml", str(root)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> Path:
    root = opt_ml_tree(tmp_path_factory.mktemp("ddp") / "two", text_dir, 2)
    done = train(root)
    assert done.returncode == 0, done.stdout + done.stderr
    (root / "log").write_text(done.stdout)
    return root


def test_two_processes_follow_the_one_process_loss_curve(
        two_processes: Path, tmp_path: Path, text_dir: Path) -> None:
    one = opt_ml_tree(tmp_path / "one", text_dir, 1)
    done = train(one)
    assert done.returncode == 0, done.stdout + done.stderr
    single, double = losses(done.stdout), losses((two_processes / "log").read_text())
    assert sorted(single) == sorted(double) == list(range(1, STEPS + 1))
    gaps = {step: abs(single[step] - double[step]) for step in single}
    print("step  1-process  2-process")  # the figures for the note (pytest -s)
    for step in sorted(single):
        print(f"{step:4d}  {single[step]:.6f}   {double[step]:.6f}")
    print(f"tokens/s 1-process {rates(done.stdout)[1:]}\n"
          f"tokens/s 2-process {rates((two_processes / 'log').read_text())[1:]}")
    assert max(gaps.values()) <= LOSS_TOLERANCE, gaps
    assert single[STEPS] < single[1] - 0.1  # it learned: the comparison is not of noise

    # Counted over the global batch: both report tokens of 4 windows per step, and the
    # artifact is written once, by rank 0.
    log = (two_processes / "log").read_text()
    assert "2 process(es)" in log
    assert log.count("genkiln: artifact written to") == 1
    assert log.count("step=1 train_loss=") == 1
    assert sorted(p.name for p in (two_processes / "model").iterdir()) == sorted(
        p.name for p in (one / "model").iterdir())


def test_two_processes_resume_exactly_after_sigterm(two_processes: Path, tmp_path: Path,
                                                    text_dir: Path) -> None:
    stopped = opt_ml_tree(tmp_path / "stopped", text_dir, 2)
    process = subprocess.Popen([*GENKILN, "train", "--opt-ml", str(stopped)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("step=4 "):
            process.send_signal(signal.SIGTERM)  # to the supervisor, as SageMaker does
            break
    process.stdout.read()
    assert process.wait(timeout=120) == 143
    assert "stopped by SIGTERM" in (stopped / "output/failure").read_text()
    meta = json.loads((stopped / "checkpoints/checkpoint.json").read_text())
    assert 4 <= meta["step"] < STEPS
    saved = load_file(str(stopped / "checkpoints/checkpoint.safetensors"))
    assert {"torch/rng/rank0", "torch/rng/rank1"} <= saved.keys()

    (stopped / "output/failure").unlink()
    again = train(stopped)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from the checkpoint at step {meta['step']}" in again.stdout

    straight = load_file(str(two_processes / "model/model.safetensors"))
    resumed = load_file(str(stopped / "model/model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name


def test_image_families_shard_the_same_batches(tmp_path: Path, digits_dir: Path) -> None:
    """The image recipes' base shards batches as the sequence one does: the (noise-free)
    autoencoder ends at the one-process weights; its artifact is written once."""
    weights = {}
    for processes in ("1", "2"):
        opt_ml = emulate_opt_ml(tmp_path / processes, data=digits_dir, hyperparameters={
            **IMAGE_TINY["autoencoder"], "processes_per_host": processes})
        assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
        weights[processes] = load_file(str(opt_ml.model_dir / "model.safetensors"))
    for name, tensor in weights["1"].items():
        torch.testing.assert_close(weights["2"][name], tensor, rtol=0, atol=1e-6)


def test_a_batch_that_does_not_split_is_refused(tmp_path: Path, text_dir: Path) -> None:
    opt_ml = emulate_opt_ml(tmp_path, data=text_dir, hyperparameters={
        **TINY, "batch_size": "5", "processes_per_host": "2"})
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    reason = OptMl(opt_ml.root).failure_path.read_text()
    assert reason.startswith("batch_size 5 does not split evenly over 2 processes")
    assert list(opt_ml.model_dir.iterdir()) == []


def test_a_worker_that_fails_on_bad_data_fails_the_job_once(tmp_path: Path,
                                                             text_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for path in text_dir.iterdir():
        (data / path.name).write_bytes(path.read_bytes())
    (data / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", data=data, hyperparameters={
        **TINY, "processes_per_host": "2"})
    assert run_training(opt_ml) == EXIT_BAD_INPUT  # every worker's reason, the job's
    reason = opt_ml.failure_path.read_text()
    assert "latin1.txt is not UTF-8 text" in reason and reason.count("\n") == 1
    assert list(opt_ml.model_dir.iterdir()) == []


def test_rbm_refuses_several_processes(tmp_path: Path) -> None:
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={
        **IMAGE_TINY["rbm"], "processes_per_host": "2"})
    assert run_training(opt_ml) == EXIT_BAD_INPUT
    reason = opt_ml.failure_path.read_text()
    assert reason.startswith("processes_per_host: the rbm family trains on one process only")
    assert list(opt_ml.model_dir.iterdir()) == []


def test_every_host_joins_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.distributed import Rendezvous, World
    from training.entry import _settings, rendezvous
    from training.settings import JobSettings

    monkeypatch.delenv("MASTER_PORT", raising=False)
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={**TINY, "processes_per_host": "2"})
    opt_ml.resourceconfig_path.write_text(json.dumps(
        {"current_host": "worker", "hosts": ["worker", "localhost"]}))
    family, cfg, _ = _settings(opt_ml, {})
    # Hosts in SageMaker's sorted order: this one is the second; the first hosts rank 0.
    assert rendezvous(opt_ml, family, cfg) == Rendezvous(
        host_rank=1, hosts=2, per_host=2, address="127.0.0.1", port=JobSettings().master_port)
    # Its second process is rank 3 of 4 and trains on the last quarter of each batch.
    assert World(rank=3, size=4).part(8) == slice(6, 8)
