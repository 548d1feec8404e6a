"""The diffusion family through the real entry point and server: own captioned data
trains, refusals name the files, prompts answer PNGs (JSON or image/png), streams carry
previews and then the images, concurrent requests share denoising steps and get the
images they get alone, and `genkiln evaluate` reports on own data."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import DIFFUSION_TINY
from tests.e2e.servers import sse_events
from tests.unit.test_diffusion import captioned_folder
from training.entry import run_training
from training.evaluation.evaluate import evaluate_artifact, write_evaluation
from training.local import emulate_opt_ml

TINY = DIFFUSION_TINY


@pytest.fixture(scope="module")
def artifact(diffusion_artifact: Path) -> Path:
    return diffusion_artifact


@pytest.fixture(scope="module")
def server(artifact: Path) -> Iterator[TestClient]:
    from inference.server import create_app

    with TestClient(create_app(artifact)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ping").status_code != 200:  # the model loads in the background
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield client


def png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_the_artifact_keeps_safetensors_a_tokenizer_and_samples(artifact: Path) -> None:
    manifest = json.loads((artifact / "genkiln.json").read_text())
    assert manifest["family"] == "diffusion" and manifest["modality"] == "captioned"
    assert {"model.safetensors", "tokenizer.json", "samples/grid.png",
            "samples/prompts.json"} <= set(manifest["files"])
    assert not list(artifact.rglob("*.pt")) and not list(artifact.rglob("*.pkl"))
    assert manifest["data"]["train_images"] == 18 and manifest["data"]["validation_images"] == 6
    assert "val_loss" in manifest["metrics"]


@pytest.mark.parametrize(("mess", "message"), [
    ("uncaptioned", "images without a caption: 99.png"),
    ("orphan", "captions images that are not in the folder: ghost.png"),
    ("mixed", "the images mix sizes"),
])
def test_a_bad_captioned_folder_fails_the_job_naming_the_files(tmp_path: Path, mess: str,
                                                               message: str) -> None:
    data = captioned_folder(tmp_path / "data", n=6)
    if mess == "uncaptioned":
        Image.new("RGB", (16, 16)).save(data / "99.png")
    elif mess == "orphan":
        with (data / "captions.jsonl").open("a") as f:
            f.write(json.dumps({"file": "ghost.png", "text": "a ghost"}) + "\n")
    else:
        Image.new("RGB", (20, 20)).save(data / "0.png")
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=TINY, data=data)
    assert run_training(opt_ml) != 0
    assert message in opt_ml.failure_path.read_text()


def invoke(client: TestClient, payload: Any, **headers: str) -> Any:
    return client.post("/invocations", json=payload, headers=headers)


def test_a_prompt_answers_pngs_and_the_seed_repeats_them(server: TestClient) -> None:
    answer = invoke(server, {"prompt": "a red square", "n": 2, "seed": 3}).json()
    images = [png(base64.b64decode(i)) for i in answer["images"]]
    assert [i.shape for i in images] == [(16, 16, 3)] * 2
    assert answer["generation_id"] and answer["seed"] == 3 and answer["steps"] == 3
    again = invoke(server, {"prompt": "a red square", "n": 2, "seed": 3}).json()
    assert again["images"] == answer["images"]
    body = invoke(server, {"prompt": "a red square", "n": 2, "seed": 3},
                  accept="image/png")
    assert body.headers["content-type"] == "image/png"
    assert png(body.content).shape[1] > 16  # the grid of both


def test_a_stream_sends_previews_then_the_images_with_their_id(server: TestClient) -> None:
    with server.stream("POST", "/invocations", json={
            "prompt": "a blue square", "stream": True, "steps": 4, "preview_every": 1,
            "seed": 9}) as response:
        assert response.status_code == 200
        events = sse_events(response.iter_lines())
    assert [e["event"] for e in events] == ["preview"] * 3 + ["final"]
    assert [e["step"] for e in events] == [1, 2, 3, 4]
    final = events[-1]
    assert final["generation_id"] and len(final["images"]) == 1
    whole = invoke(server, {"prompt": "a blue square", "steps": 4, "seed": 9}).json()
    assert whole["images"] == final["images"]


@pytest.mark.parametrize(("payload", "status", "message"), [
    ({"prompt": "a red square", "n": 99}, 422, "n"),
    ({"prompt": "red " * 200}, 422, "prompt is"),
    ({"prompt": 7}, 422, "prompt"),
    ({"prompt": "x", "guidance_scale": "lots"}, 422, "guidance_scale"),
])
def test_bad_prompts_get_a_4xx_that_says_what_to_change(server: TestClient, payload: Any,
                                                        status: int, message: str) -> None:
    response = invoke(server, payload)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_concurrent_prompts_share_denoising_steps_and_keep_their_images(
        server: TestClient) -> None:
    alone = {seed: invoke(server, {"prompt": "a green square", "seed": seed, "steps": 12}
                          ).json()["images"] for seed in range(6)}
    answers: dict[int, Any] = {}

    def ask(seed: int) -> None:
        answers[seed] = invoke(server, {"prompt": "a green square", "seed": seed,
                                        "steps": 12}).json()["images"]

    state = server.app.state.model  # type: ignore[attr-defined]
    loop = state.scheduler.decode_loop
    before = len(loop.batches)
    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert max(loop.batches[before:]) > 1  # requests ran in the same UNet calls
    # The same pictures, to the UNet's float rounding (which depends on the batch size):
    # a PNG level now and then.
    for seed, images in answers.items():
        ours, theirs = (png(base64.b64decode(i[0])).astype(int) for i in (images, alone[seed]))
        assert np.abs(ours - theirs).max() <= 2 and (ours != theirs).mean() < 0.02


def test_info_describes_the_prompt_form(server: TestClient) -> None:
    info = server.get("/info").json()
    form = info["playground"]
    assert form["input"] == "text" and form["input_field"] == "prompt"
    assert form["stream"] is True and form["output"] == "png"
    assert info["kinds"] == ["generate"]


def test_evaluate_on_own_data_reports_the_held_out_denoising_loss(artifact: Path,
                                                                  tmp_path: Path) -> None:
    data = artifact.parents[1] / "data"  # the folder the fixture trained on
    evaluation = evaluate_artifact(artifact, data=data, log=lambda _: None)
    _, report = write_evaluation(evaluation, tmp_path)
    assert set(evaluation.metrics) == {"val_loss"}
    assert evaluation.grid_png and "no judge reads these pictures" in report.read_text()
