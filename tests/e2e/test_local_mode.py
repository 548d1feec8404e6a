"""SageMaker local mode end to end, through the real SDK and the project image.

`genkiln train --mode container` trains the bundled Transformer family on a tiny budget in
a local-mode training container; `genkiln deploy --mode container` serves the resulting
model.tar.gz as a local endpoint, which is invoked through the SDK's local runtime client
and through `EndpointClient`, streaming included. Needs Docker and the built image.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from genkiln import sagemaker_sdk
from genkiln.cli import main
from genkiln.client import EndpointClient
from tests.conftest import TINY
from tests.docker_env import (
    IMAGE,
    docker,
    remove_local_mode_leftovers,
    require_docker,
    require_sagemaker_sdk,
)

ENDPOINT = "genkiln-e2e"
PROMPT = "Beautiful is"
PARAMETERS = {"max_new_tokens": 6, "seed": 11}


@pytest.fixture(scope="module", autouse=True)
def _docker() -> Iterator[None]:
    require_sagemaker_sdk()
    require_docker()
    remove_local_mode_leftovers()
    yield
    remove_local_mode_leftovers()


@dataclass(frozen=True)
class Trained:
    model_dir: Path
    tarball: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> Trained:
    model_dir = tmp_path_factory.mktemp("local-mode") / "model"
    tokens = [f"--{key}={value}" for key, value in TINY.items()]
    status = main(["train", "--mode", "container", "--image", IMAGE, "--data", str(text_dir),
                   "--model-dir", str(model_dir), *tokens])
    assert status == 0
    return Trained(model_dir, model_dir.parent / "model.tar.gz")


def test_local_mode_training_returns_the_artifact(trained: Trained) -> None:
    described = json.loads((trained.model_dir / "genkiln.json").read_text())
    assert described["family"] == "transformer"
    # The string hyperparameters reached the container and were typed there.
    assert described["config"]["n_embd"] == int(TINY["n_embd"])
    assert described["config"]["max_steps"] == int(TINY["max_steps"])
    assert trained.tarball.is_file()
    # Local mode cleaned up after itself.
    assert not docker("ps", "-aq", "--filter", f"ancestor={IMAGE}").stdout.strip()


@dataclass
class Deployment:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def deployment(trained: Trained) -> Iterator[Deployment]:
    # The command a user runs; it serves until SIGTERM / Ctrl-C. Not on 8080, the SDK's
    # default, which something else on the machine may hold.
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "genkiln", "deploy", str(trained.tarball),
         "--mode", "container", "--image", IMAGE, "--endpoint-name", ENDPOINT,
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
    try:
        wait_for_line(lines, f"endpoint {ENDPOINT} is in service", timeout=180)
        yield Deployment(process, lines, port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)


def wait_for_line(lines: queue.Queue[str], text: str, *, timeout: float) -> None:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(seen[-40:])}")


def sdk_generate(deployment: Deployment) -> list[dict[str, object]]:
    with sagemaker_sdk.telemetry_opted_out():
        session = sagemaker_sdk.local_session(serving_port=deployment.port)
        runtime = session.sagemaker_runtime_client
        response = runtime.invoke_endpoint(
            EndpointName=ENDPOINT, ContentType="application/json", Accept="application/json",
            Body=json.dumps({"inputs": PROMPT, "parameters": PARAMETERS}))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    answer: list[dict[str, object]] = json.loads(response["Body"].read())
    return answer


def test_sdk_local_runtime_invokes_the_endpoint(deployment: Deployment) -> None:
    [answer] = sdk_generate(deployment)
    assert isinstance(answer["generated_text"], str) and answer["generated_text"]


def test_endpoint_client_agrees_with_the_sdk(deployment: Deployment) -> None:
    client = EndpointClient(url=deployment.url)
    [ours], [theirs] = client.generate(PROMPT, **PARAMETERS), sdk_generate(deployment)
    assert ours.pop("generation_id") != theirs.pop("generation_id")  # each is named
    assert ours == theirs


def test_endpoint_client_streams(deployment: Deployment) -> None:
    client = EndpointClient(url=deployment.url)
    events = list(client.stream(PROMPT, **PARAMETERS))
    assert len(events) == PARAMETERS["max_new_tokens"]
    assert all(e["generated_text"] is None for e in events[:-1])
    assert events[-1]["generated_text"] == sdk_generate(deployment)[0]["generated_text"]


def test_stopping_the_deployment_removes_the_endpoint(deployment: Deployment) -> None:
    # Last in this module: it stops the shared endpoint.
    deployment.process.send_signal(signal.SIGTERM)
    assert deployment.process.wait(timeout=60) == 0
    assert not docker("ps", "-aq", "--filter", f"ancestor={IMAGE}").stdout.strip()
    networks = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "sagemaker-local" not in networks
