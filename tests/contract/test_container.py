"""The image under the SageMaker container contract, run the way SageMaker runs it.

`docker run IMAGE train` with an `/opt/ml` tree mounted (string hyperparameters, channels,
failure file, exit status) and `docker run IMAGE serve` with a model folder mounted
(`/ping`, `/invocations`, SIGTERM). Needs Docker and the built image (`make image`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TINY
from tests.docker_env import IMAGE, docker, require_docker
from tests.e2e.servers import sse_events
from training.models import get_family

PING_TIMEOUT_S = 2.0  # SageMaker's per-ping timeout
READY_WITHIN_S = 60.0  # far below SageMaker's 4 minutes; a tiny model loads in seconds


@pytest.fixture(scope="module", autouse=True)
def _docker() -> None:
    require_docker()


def opt_ml_tree(root: Path, hyperparameters: dict[str, str], *, channels: dict[str, Path | None]
                ) -> Path:
    """An /opt/ml tree as SageMaker lays it out; a channel given None is declared but absent."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
         for name in channels}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))
    for name, source in channels.items():
        if source is not None:
            shutil.copytree(source, root / "input" / "data" / name)
    return root


@dataclass(frozen=True)
class Run:
    returncode: int
    log: str
    root: Path


def run_train(root: Path) -> Run:
    # The one argument SageMaker passes; the image's ENTRYPOINT is the program.
    result = docker("run", "--rm", "-v", f"{root}:/opt/ml", IMAGE, "train", timeout=300,
                    check=False)
    return Run(result.returncode, result.stdout + result.stderr, root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> Run:
    root = opt_ml_tree(tmp_path_factory.mktemp("opt_ml"), TINY, channels={"train": text_dir})
    return run_train(root)


def test_image_trains_by_default() -> None:
    config = json.loads(docker("image", "inspect", IMAGE).stdout)[0]["Config"]
    # The SDK's local-mode trainer passes no command.
    assert config["Cmd"] == ["train"]
    assert "8080/tcp" in config["ExposedPorts"]


def test_cpu_image_stays_within_its_size_budget() -> None:
    # The target for the CPU image; torch alone is about 0.7 GB of it.
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    assert size <= 1.3e9, f"{IMAGE} is {size / 1e9:.2f} GB; the CPU image budget is 1.3 GB"


def test_image_runs_plain_commands_too(tmp_path: Path) -> None:
    # The SDK's local mode cleans root-owned files up this way on a Linux host.
    (tmp_path / "left-behind").write_text("x")
    (tmp_path / "left-behind").chmod(0o600)
    docker("run", "--rm", "-v", f"{tmp_path}:/delete", IMAGE, "chmod", "-R", "777", "/delete")
    assert (tmp_path / "left-behind").stat().st_mode & 0o777 == 0o777


def test_train_types_string_hyperparameters_and_writes_the_artifact(trained: Run) -> None:
    assert trained.returncode == 0, trained.log
    model = trained.root / "model"
    described = json.loads((model / "genkiln.json").read_text())
    # "1", "32", "8" arrived as strings and were typed against the family's config.
    assert described["config"]["n_layer"] == 1
    assert described["config"]["n_embd"] == 32
    assert described["config"]["max_steps"] == 8
    assert not (trained.root / "output" / "failure").exists()


def test_training_log_matches_the_metric_definitions(trained: Run) -> None:
    # What SageMaker would scrape with the definitions the launcher sends.
    found = {}
    for definition in get_family("transformer").metric_definitions:
        values = re.findall(definition["Regex"], trained.log)
        if values:
            found[definition["Name"]] = float(values[-1])
    assert {"train_loss", "val_loss"} <= found.keys(), trained.log
    assert found["train_loss"] > 0


def test_missing_channel_writes_failure_and_exits_non_zero(tmp_path: Path) -> None:
    run = run_train(opt_ml_tree(tmp_path, TINY, channels={"train": None}))
    assert run.returncode != 0
    reason = (tmp_path / "output" / "failure").read_text()
    assert "train" in reason
    assert not any((tmp_path / "model").glob("*.safetensors"))


def test_unknown_hyperparameter_fails_listing_the_valid_ones(tmp_path: Path, text_dir: Path
                                                           ) -> None:
    run = run_train(opt_ml_tree(tmp_path, {**TINY, "n_layr": "2"},
                                channels={"train": text_dir}))
    assert run.returncode != 0
    reason = (tmp_path / "output" / "failure").read_text()
    assert "n_layr" in reason and "n_layer" in reason


# -- serve -----------------------------------------------------------------------------


@dataclass
class Server:
    container: str
    url: str
    ready_after_s: float


@pytest.fixture(scope="module")
def server(trained: Run) -> Iterator[Server]:
    assert trained.returncode == 0, trained.log
    started = time.monotonic()
    # Port 8080 published on loopback only, at a free port Docker picks.
    container = docker("run", "-d", "-p", "127.0.0.1::8080",
                       "-v", f"{trained.root / 'model'}:/opt/ml/model:ro",
                       IMAGE, "serve").stdout.strip()
    try:
        host_port = docker("port", container, "8080/tcp").stdout.split()[0]
        url = f"http://{host_port}"
        ready_after = wait_until_ready(url, started)
        yield Server(container, url, ready_after)
    finally:
        docker("rm", "-f", container, check=False)


def wait_until_ready(url: str, started: float) -> float:
    """Seconds from `docker run` to the first 200 on /ping; every ping must answer in 2 s."""
    while time.monotonic() - started < READY_WITHIN_S:
        try:
            response = httpx.get(f"{url}/ping", timeout=PING_TIMEOUT_S)
        except httpx.TransportError:  # not listening yet
            time.sleep(0.05)
            continue
        if response.status_code == 200:
            return time.monotonic() - started
        assert response.status_code == 503, response.text  # loading
        time.sleep(0.05)
    raise AssertionError(f"/ping gave no 200 within {READY_WITHIN_S} s")


def test_the_server_is_pid_1(server: Server) -> None:
    # No shell or init in front: SIGTERM reaches the server itself.
    cmdline = docker("exec", server.container, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[0].startswith("python3"), cmdline
    assert cmdline[1:4] == ["-m", "inference", "serve"], cmdline


def test_the_image_refuses_an_unknown_verb_in_one_line() -> None:
    result = docker("run", "--rm", IMAGE, "trian", check=False)
    assert result.returncode == 2
    assert "'trian' is neither a verb (train, serve, evaluate, monitor) nor a program" \
        in result.stderr, result.stderr


def test_the_image_holds_the_runtimes_not_the_control_plane() -> None:
    probe = ("import importlib.util as u, shutil; "
             "print([m for m in ('training', 'inference', 'genkiln', 'infra') if u.find_spec(m)],"
             " shutil.which('genkiln'))")
    shown = docker("run", "--rm", IMAGE, "python3", "-c", probe).stdout.strip()
    assert shown == "['training', 'inference'] None", shown


def test_ping_answers_within_two_seconds_once_ready(server: Server) -> None:
    print(f"serve: first 200 on /ping {server.ready_after_s:.2f} s after docker run")
    for _ in range(5):
        started = time.monotonic()
        assert httpx.get(f"{server.url}/ping", timeout=PING_TIMEOUT_S).status_code == 200
        assert time.monotonic() - started < PING_TIMEOUT_S


def test_invocations_answer_tgi_shapes(server: Server) -> None:
    payload = {"inputs": "Beautiful is", "parameters": {"max_new_tokens": 6, "seed": 3}}
    # SageMaker adds headers of its own: they must be ignored.
    headers = {"X-Amzn-SageMaker-Custom-Attributes": "trace=1", "X-Unknown": "x"}
    response = httpx.post(f"{server.url}/invocations", json=payload, headers=headers,
                          timeout=60)
    assert response.status_code == 200, response.text
    [answer] = response.json()
    assert isinstance(answer["generated_text"], str) and answer["generated_text"]
    # The same seed samples the same text.
    [again] = httpx.post(f"{server.url}/invocations", json=payload, timeout=60).json()
    assert again.pop("generation_id") != answer.pop("generation_id")  # each is named
    assert again == answer


def test_invocations_stream_server_sent_events(server: Server) -> None:
    payload = {"inputs": "Beautiful is", "parameters": {"max_new_tokens": 4, "seed": 3},
               "stream": True}
    with httpx.stream("POST", f"{server.url}/invocations", json=payload, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    assert len(events) == 4
    assert [e["generated_text"] for e in events[:-1]] == [None] * 3
    assert all(isinstance(e["token"]["text"], str) for e in events)
    # The stream ends with the text a plain request with the same seed returns.
    whole = httpx.post(f"{server.url}/invocations", json={**payload, "stream": False},
                       timeout=60).json()
    assert events[-1]["generated_text"] == whole[0]["generated_text"]


def test_bad_request_is_a_4xx(server: Server) -> None:
    response = httpx.post(f"{server.url}/invocations", content=b"{not json",
                          headers={"Content-Type": "application/json"}, timeout=10)
    assert 400 <= response.status_code < 500


def test_sigterm_stops_the_server_within_seconds(server: Server) -> None:
    # Last in this module: it stops the shared server.
    docker("kill", "--signal", "TERM", server.container)
    started = time.monotonic()
    # SageMaker sends SIGKILL 30 s after SIGTERM: the server must have exited, cleanly,
    # before then (docker wait's timeout is that deadline; its figure is printed).
    waited = subprocess.run(["docker", "wait", server.container], capture_output=True,
                            text=True, timeout=25, check=True)
    print(f"serve: stopped {time.monotonic() - started:.2f} s after SIGTERM")
    assert waited.stdout.strip() == "0"
