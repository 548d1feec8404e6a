"""The musegan family end to end: `genkiln train`, `genkiln serve` over HTTP, and quality."""

import base64
import json
import os
import subprocess
from pathlib import Path

import httpx
import torch

from tests.conftest import MUSEGAN_TINY
from tests.e2e.servers import GENKILN, serving
from tests.e2e.test_image_families import flags
from training.data.midi import read_midi
from training.entry import run_training
from training.local import emulate_opt_ml

#: Small networks run far faster on one thread than on two busy cores.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
TUNE = [{"pitch": p, "start": i * 0.5, "duration": 0.5}
        for i, p in enumerate([72, 71, 69, 67, 69, 71, 72, 74, 76, 74, 72, 71, 69, 67, 65, 64])]


def test_train_on_chorale_midis_then_serve_over_http(tmp_path: Path, chorale_dir: Path) -> None:
    model = tmp_path / "model"
    done = subprocess.run([*GENKILN, "train", "--data", str(chorale_dir), "--model-dir",
                           str(model), *flags(MUSEGAN_TINY)],
                          capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("step=0 val_empty_bar_rate_real=") for line in lines)
    assert any(line.startswith("step=4 ") and "val_metric_gap=" in line for line in lines)
    assert any("bars_per_second=" in line for line in lines)

    with serving(model, env=ONE_THREAD) as served:
        url = served.url
        request = {"melody": TUNE, "seed": 2, "programs": {"melody": 73, "bass": 42}}
        body = httpx.post(f"{url}/invocations", json=request, timeout=30).json()
        assert [t["name"] for t in body["tracks"]] == ["melody", "alto", "tenor", "bass"]
        midi = httpx.post(f"{url}/invocations", json=request, timeout=30,
                          headers={"Accept": "audio/midi"})
        assert midi.status_code == 200 and midi.content == base64.b64decode(body["midi"])
        assert read_midi(midi.content).parts[0].program == 73
        png = httpx.post(f"{url}/invocations", json=request, timeout=30,
                         headers={"Accept": "image/png"})
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        bad = httpx.post(f"{url}/invocations", json={"melody_midi": "AAAA"}, timeout=30)
        assert bad.status_code == 422 and "not a readable MIDI file" in bad.json()["error"]


def test_a_short_run_moves_toward_the_chorales(tmp_path: Path, chorale_dir: Path) -> None:
    """After a short run the generated accompaniment's metrics are nearer Bach's than the
    untrained generator's are: overall, and in how well the voices agree in harmony."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt_ml = emulate_opt_ml(tmp_path, data=chorale_dir, hyperparameters={
            "family": "musegan", "seed": "3", "max_steps": "100", "batch_size": "8",
            "eval_interval": "1000", "log_interval": "50", "val_fraction": "0.25"})
        assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    finally:
        torch.set_num_threads(before)
    metrics = json.loads((opt_ml.model_dir / "genkiln.json").read_text())["metrics"]
    assert metrics["val_metric_gap"] < metrics["val_metric_gap_untrained"], metrics
    real = metrics["val_tonal_distance_real"]
    assert abs(metrics["val_tonal_distance"] - real) < \
        abs(metrics["val_tonal_distance_untrained"] - real), metrics
