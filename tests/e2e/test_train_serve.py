"""The whole path through the real entry points, in separate processes, over real HTTP."""

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from genkiln.client import EndpointClient, EndpointError
from tests.conftest import TINY
from tests.e2e.servers import GENKILN, Served, serving


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> Path:
    """An /opt/ml tree laid out by hand, as SageMaker would, trained by `genkiln train`."""
    root = tmp_path_factory.mktemp("opt_ml")
    write_json(root / "input/config/hyperparameters.json", TINY)
    write_json(root / "input/config/inputdataconfig.json",
               {"train": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}})
    write_json(root / "input/config/resourceconfig.json",
               {"current_host": "algo-1", "hosts": ["algo-1"]})
    (root / "input/data").mkdir(parents=True)
    (root / "input/data/train").symlink_to(text_dir)
    # Script-mode toolkits pass hyperparameters as `--key value` too; those win.
    done = subprocess.run([*GENKILN, "train", "--opt-ml", str(root), "--max_steps", "6"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    # Metrics are printed in the form SageMaker metric_definitions read.
    assert any(line.startswith("step=6 ") and "val_loss=" in line for line in lines)
    assert any("train_loss=" in line for line in lines)
    assert not (root / "output/failure").exists()
    assert json.loads((root / "model/genkiln.json").read_text())["metrics"]["steps"] == 6
    return root / "model"


@pytest.fixture(scope="module")
def server(trained: Path) -> Iterator[tuple[Served, EndpointClient]]:
    with serving(trained) as served:
        yield served, EndpointClient(url=served.url)


def test_generate_and_stream_over_http(server: tuple[Served, EndpointClient]
                                       ) -> None:
    _, client = server
    params = {"max_new_tokens": 12, "temperature": 0.9, "seed": 123}
    [whole] = client.generate("Beautiful is", **params)
    events = list(client.stream("Beautiful is", **params))
    assert events[-1]["generated_text"] == whole["generated_text"]
    assert events[-1]["details"]["seed"] == 123
    assert len(events) == events[-1]["details"]["generated_tokens"]
    with pytest.raises(EndpointError) as info:
        client.generate("x", max_new_tokens=0)
    assert info.value.status == 422


def test_sigterm_stops_the_server(server: tuple[Served, EndpointClient]
                                  ) -> None:
    served, client = server
    served.process.send_signal(signal.SIGTERM)
    # uvicorn drains, then re-raises SIGTERM so the exit status tells how it ended.
    assert served.process.wait(timeout=25) in (0, -signal.SIGTERM)
    assert "Finished server process" in served.output()
    assert not client.ping()


def test_invoke_command_streams_tokens(trained: Path) -> None:
    with serving(trained) as served:
        url = served.url
        done = subprocess.run([*GENKILN, "invoke", "Flat is", "--url", url,
                               "--stream", "--json", "--max-new-tokens", "5", "--seed", "1",
                               "--temperature", "1.0"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        assert events[-1]["generated_text"] is not None


def test_no_train_channel_uses_the_bundled_corpus(tmp_path: Path) -> None:
    flags = [token for key, value in TINY.items() for token in (f"--{key}", value)]
    done = subprocess.run(
        [*GENKILN, "train", "--model-dir", str(tmp_path / "model"), *flags, "--max_steps", "2"],
        capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no train channel: using the bundled: docstrings of the Python" in done.stdout
    manifest = json.loads((tmp_path / "model/genkiln.json").read_text())
    assert manifest["data"]["source"].startswith("bundled: docstrings")
    assert manifest["data"]["documents"] > 1000


def test_sigterm_during_training_fails_cleanly(tmp_path: Path, text_dir: Path) -> None:
    root = tmp_path / "opt_ml"
    write_json(root / "input/config/hyperparameters.json",
               {**TINY, "max_steps": "1000000", "log_interval": "1"})
    (root / "input/data").mkdir(parents=True)
    (root / "input/data/train").symlink_to(text_dir)
    process = subprocess.Popen([*GENKILN, "train", "--opt-ml", str(root)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # wait until it is really training
        if line.startswith("step=3 "):
            break
    process.send_signal(signal.SIGTERM)
    process.stdout.read()
    assert process.wait(timeout=60) == 143
    assert "training stopped by SIGTERM at step" in (root / "output/failure").read_text()
    assert not (root / "model").exists() or not any((root / "model").iterdir())
