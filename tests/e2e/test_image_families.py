"""Image families end to end: `genkiln train`, the artifact, `genkiln serve`, and quality."""

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import IMAGE_TINY
from tests.e2e.servers import GENKILN, serving
from training.entry import run_training
from training.local import emulate_opt_ml
from training.models import get_family
from training.recipes.image import SAMPLES_FILE


def flags(values: dict[str, str]) -> list[str]:
    return [token for key, value in values.items() for token in (f"--{key}", value)]


@pytest.mark.parametrize("family", ["gan", "vae", "rbm", "autoencoder"])
def test_dry_run_writes_a_complete_artifact(family: str,
                                            image_artifacts: Callable[[str], Path]) -> None:
    manifest = json.loads((image_artifacts(family) / "genkiln.json").read_text())
    assert manifest["family"] == family and manifest["modality"] == "image"
    assert manifest["data"]["source"].endswith("input/data/train")  # the channel, not bundled
    assert manifest["data"]["per_class"] == {"3": 12, "7": 12}
    assert SAMPLES_FILE in manifest["files"] and manifest["metrics"]["steps"] == 4
    # Every metric the family declares for metric_definitions is measured.
    declared = set(get_family(family).metrics) - {"learning_rate"}
    assert declared <= set(manifest["metrics"]), declared - set(manifest["metrics"])


def test_cli_trains_on_the_bundled_digits(tmp_path: Path) -> None:
    done = subprocess.run(
        [*GENKILN, "train", "--model-dir", str(tmp_path / "model"),
         *flags(IMAGE_TINY["autoencoder"])],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no train channel: using the bundled: scikit-learn handwritten digits" in done.stdout
    lines = done.stdout.splitlines()
    assert any(line.startswith("step=0 val_auroc_untrained=") for line in lines)
    assert any(line.startswith("step=4 ") and "val_auroc=" in line for line in lines)
    assert any("images_per_second=" in line for line in lines)
    manifest = json.loads((tmp_path / "model/genkiln.json").read_text())
    assert manifest["data"]["images"] == 1797 and manifest["data"]["validation_images"] == 449
    assert manifest["config"]["batch_size"] == 8  # the user's value beats the family default


def test_cli_lists_the_family_defaults() -> None:
    done = subprocess.run([*GENKILN, "train", "--list-hyperparameters", "--family", "gan"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "  learning_rate=0.0003" in done.stdout and "  label_smoothing=0.1" in done.stdout


def test_a_bad_image_folder_fails_the_job_naming_the_file(tmp_path: Path,
                                                          digits_dir: Path) -> None:
    data = tmp_path / "data"
    (data / "7").mkdir(parents=True)
    (data / "7" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=IMAGE_TINY["vae"], data=data)
    assert run_training(opt_ml) == 2
    reason = opt_ml.failure_path.read_text()
    assert "7/bad.jpg is not a readable image" in reason and reason.count("\n") == 1
    assert list(opt_ml.model_dir.iterdir()) == []


def test_train_on_a_folder_then_serve_png_over_http(tmp_path: Path, digits_dir: Path) -> None:
    model = tmp_path / "model"
    done = subprocess.run([*GENKILN, "train", "--data", str(digits_dir), "--model-dir",
                           str(model), *flags(IMAGE_TINY["gan"])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with serving(model) as served:
        url = served.url
        answer = httpx.post(f"{url}/invocations", json={"kind": "sample", "n": 4, "class": 7,
                                                         "seed": 1},
                            headers={"Accept": "image/png"})
        assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
        bad = httpx.post(f"{url}/invocations", json={"kind": "sample", "class": 5})
        assert bad.status_code == 422 and "class 5 is out of range" in bad.json()["error"]


# --- a short run beats untrained weights -------------------------------------------------
SHORT = {
    "gan": ({"max_steps": "300", "g_width": "16", "d_width": "16"}, "val_fid", "lower"),
    "vae": ({"max_steps": "150", "width": "16"}, "val_fid", "lower"),
    "rbm": ({"max_steps": "300", "n_hidden": "32"}, "val_pll", "higher"),
    "autoencoder": ({"max_steps": "100", "width": "16"}, "val_auroc", "higher"),
}


@pytest.mark.parametrize("family", list(SHORT))
def test_a_short_run_beats_untrained_weights(family: str, tmp_path: Path) -> None:
    extra, metric, better = SHORT[family]
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={"family": family, "seed": "3",
                                                       "log_interval": "100",
                                                       "eval_interval": "10000", **extra})
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    metrics = json.loads((opt_ml.model_dir / "genkiln.json").read_text())["metrics"]
    trained, untrained = metrics[metric], metrics[f"{metric}_untrained"]
    if better == "lower":
        assert trained < 0.5 * untrained, (trained, untrained)
        assert metrics["val_confidence"] > 0.5
    else:
        assert trained > untrained, (trained, untrained)
    if family == "rbm":
        assert metrics["val_probe_accuracy"] > 0.8
    if family == "autoencoder":
        assert metrics["val_auroc"] > 0.75


def test_unlabelled_colour_images_train_and_serve(tmp_path: Path) -> None:
    """Loose RGB images of another size: unconditional, resized, scored in PCA space."""
    import base64
    import io

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    from inference.server import create_app

    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(40):
        pixels = np.zeros((24, 24, 3), dtype=np.uint8)
        pixels[:, :, i % 3] = 255  # red, green or blue squares...
        pixels[rng.integers(0, 12):, :12] = 40  # ...with a dark corner somewhere
        Image.fromarray(pixels).save(data / f"square-{i}.png")
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", data=data, hyperparameters={
        **IMAGE_TINY["autoencoder"], "image_size": "16"})
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    manifest = json.loads((opt_ml.model_dir / "genkiln.json").read_text())
    assert manifest["model_args"]["image"] == {"size": 16, "channels": 3, "classes": []}
    assert 0.0 <= manifest["metrics"]["val_auroc"] <= 1.0

    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(buffer, "PNG")
    with TestClient(create_app(opt_ml.model_dir)) as client:
        while client.get("/ping").status_code != 200:
            time.sleep(0.02)
        answer = client.post("/invocations", json={
            "kind": "score", "image": base64.b64encode(buffer.getvalue()).decode()})
        assert answer.status_code == 200, answer.text
        assert isinstance(answer.json()["anomaly"], bool)
        gray = np.zeros((16, 16)).tolist()  # a grayscale pixel list for a colour model
        refused = client.post("/invocations", json={"kind": "encode", "image": gray})
        assert refused.status_code == 422 and "[16, 16, 3] pixel lists" in refused.text


def test_unlabelled_images_give_a_fid_without_confidence(tmp_path: Path) -> None:
    from tests.conftest import write_digit_pngs

    data = write_digit_pngs(tmp_path / "data", subfolders=False, per_class=15)
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", data=data,
                            hyperparameters=IMAGE_TINY["vae"])
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    metrics = json.loads((opt_ml.model_dir / "genkiln.json").read_text())["metrics"]
    assert metrics["val_fid"] > 0 and "val_confidence" not in metrics


def test_a_short_vae_run_beats_the_statisticians_baselines(tmp_path: Path) -> None:
    """The default VAE (KL weight 0.25, samples from a mixture fitted to the codes), a
    third of its default steps: nearer the held-out digits than a per-class Gaussian's and
    a per-class 5-component mixture's samples, in the same feature space and numbers."""
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={
        "family": "vae", "max_steps": "1000", "log_interval": "500", "eval_interval": "10000"})
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    metrics = json.loads((opt_ml.model_dir / "genkiln.json").read_text())["metrics"]
    assert metrics["val_fid"] < metrics["val_fid_gmm"] < metrics["val_fid_gaussian"], metrics
