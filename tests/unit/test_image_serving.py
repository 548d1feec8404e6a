"""Image families through the real app: every request kind, PNG answers, bad requests."""

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from inference.server import create_app
from training.artifact import load_artifact


def png_b64(pixels: np.ndarray, mode: str = "L") -> str:
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).round().astype(np.uint8), mode=mode).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode_png(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image)


DIGIT = np.zeros((8, 8))
DIGIT[1:7, 3:5] = 1.0  # a "1"
OTHER = np.zeros((8, 8))
OTHER[1:7, 1:7] = 0.5


@pytest.fixture(scope="module")
def clients(image_artifacts: Callable[[str], Path]) -> Iterator[Callable[[str], TestClient]]:
    opened: dict[str, TestClient] = {}

    def client(family: str) -> TestClient:
        if family not in opened:
            c = TestClient(create_app(image_artifacts(family)))
            c.__enter__()
            deadline = time.monotonic() + 30
            while c.get("/ping").status_code != 200:
                assert time.monotonic() < deadline, c.get("/ping").json()
                time.sleep(0.02)
            opened[family] = c
        return opened[family]

    yield client
    for c in opened.values():
        c.__exit__(None, None, None)


def invoke(client: TestClient, payload: Any, **headers: str) -> Any:
    return client.post("/invocations", content=json.dumps(payload),
                       headers={"Content-Type": "application/json", **headers})


# --- every kind of every family ------------------------------------------------------
IMAGE_KINDS = [
    ("gan", {"kind": "sample", "n": 4, "class": "7", "seed": 1}, 4),
    ("gan", {"kind": "sample", "n": 3, "class": 0, "seed": 1}, 3),
    ("vae", {"kind": "sample", "n": 2, "class": 1, "seed": 5}, 2),
    ("vae", {"kind": "reconstruct", "image": png_b64(DIGIT), "seed": 1}, 1),
    ("vae", {"kind": "reconstruct", "image": DIGIT.tolist(), "class": "3"}, 1),
    ("vae", {"kind": "interpolate", "images": [png_b64(DIGIT), OTHER.tolist()], "steps": 5,
             "seed": 2}, 5),
    ("rbm", {"kind": "sample", "n": 2, "gibbs_steps": 20, "seed": 3}, 2),
]


@pytest.mark.parametrize(("family", "payload", "count"), IMAGE_KINDS)
def test_image_kinds_answer_base64_pngs(clients: Callable[[str], TestClient], family: str,
                                        payload: dict[str, Any], count: int) -> None:
    answer = invoke(clients(family), payload)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == payload["kind"] and body["media_type"] == "image/png"
    assert len(body["images"]) == count
    assert all(decode_png(image).shape == (8, 8) for image in body["images"])
    if "seed" in payload:
        assert body["seed"] == payload["seed"]
        assert invoke(clients(family), payload).json()["images"] == body["images"]


def test_same_seed_same_images_other_seed_other_images(
        clients: Callable[[str], TestClient]) -> None:
    for family in ("gan", "vae", "rbm"):
        payload = {"kind": "sample", "n": 2, "seed": 11}
        first = invoke(clients(family), payload).json()["images"]
        assert invoke(clients(family), payload).json()["images"] == first
        assert invoke(clients(family), {**payload, "seed": 12}).json()["images"] != first


def test_without_a_seed_the_answer_says_which_seed_to_replay(
        clients: Callable[[str], TestClient]) -> None:
    answer = invoke(clients("gan"), {"kind": "sample"}).json()
    replay = invoke(clients("gan"), {"kind": "sample", "seed": answer["seed"]}).json()
    assert replay["images"] == answer["images"]


def test_accept_png_gives_the_raw_image_or_a_grid(
        clients: Callable[[str], TestClient]) -> None:
    one = invoke(clients("gan"), {"kind": "sample", "seed": 1}, Accept="image/png")
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(one.content)) as image:
        assert image.size == (8, 8)
    many = invoke(clients("vae"), {"kind": "sample", "n": 4, "seed": 1}, Accept="image/png")
    with Image.open(io.BytesIO(many.content)) as image:
        assert image.size == (2 * 9 + 1, 2 * 9 + 1)  # 2×2 grid, 1 px apart


def test_a_class_is_named_or_indexed(clients: Callable[[str], TestClient]) -> None:
    # The classes are the subfolders 3/ and 7/: 7 names the class "7", 1 is its index.
    payload = {"kind": "sample", "n": 2, "seed": 4}
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        # What the model made; the generation's id and the request's parameters aside.
        body = invoke(clients("gan"), request).json()
        return {k: v for k, v in body.items() if k not in ("generation_id", "parameters")}

    by_index = answer({**payload, "class": 1})
    assert by_index["class"] == 1
    assert answer({**payload, "class": "7"}) == by_index
    assert answer({**payload, "class": 7}) == by_index
    assert invoke(clients("gan"), {**payload, "class": 0}).json()["images"] != \
        by_index["images"]


def test_rbm_features_are_hidden_probabilities(clients: Callable[[str], TestClient],
                                               image_artifacts: Callable[[str], Path]) -> None:
    body = invoke(clients("rbm"), {"kind": "features", "image": png_b64(DIGIT)}).json()
    features = np.asarray(body["features"])
    assert features.shape == (16,) and ((features > 0) & (features < 1)).all()
    # The same numbers as the saved weights give: σ(W v + c).
    weights = load_artifact(image_artifacts("rbm")).tensors()
    v = torch.from_numpy((np.round(DIGIT * 255) / 255).astype(np.float32)).flatten()
    expected = torch.sigmoid(weights["W"] @ v + weights["hidden_bias"]).numpy()
    assert np.allclose(features, expected, atol=1e-5)


def test_autoencoder_encode_and_score(clients: Callable[[str], TestClient],
                                      image_artifacts: Callable[[str], Path]) -> None:
    client = clients("autoencoder")
    code = invoke(client, {"kind": "encode", "image": png_b64(DIGIT), "seed": 1}).json()
    assert len(code["latent"]) == 4
    manifest = load_artifact(image_artifacts("autoencoder")).manifest
    threshold = manifest["model_args"]["threshold"]
    score = invoke(client, {"kind": "score", "image": DIGIT.tolist()}).json()
    assert score["threshold"] == threshold and score["threshold_percentile"] == 99.0
    assert score["anomaly"] == (score["reconstruction_error"] > threshold)
    noise = np.random.default_rng(0).random((8, 8))
    noisy = invoke(client, {"kind": "score", "image": noise.tolist()}).json()
    assert noisy["reconstruction_error"] > 0


# --- bad requests ----------------------------------------------------------------------
BAD = [
    ("gan", {"kind": "reconstruct", "image": DIGIT.tolist()}, 422,
     "kind 'reconstruct' is not served by this gan model; use one of: sample"),
    ("autoencoder", {"kind": "sample"}, 422, "use one of: encode, score"),
    ("autoencoder", {"kind": ["score"]}, 422, "use one of: encode, score"),
    ("gan", {"kind": "sample", "class": 12}, 422,
     "class 12 is out of range: give a class name (3, 7) or an index from 0 to 1"),
    ("gan", {"kind": "sample", "class": "cat"}, 422, "class 'cat' is out of range"),
    ("gan", {"kind": "sample", "n": 0}, 422, "n: Input should be greater than or equal to 1"),
    ("gan", {"kind": "sample", "count": 3}, 422,
     "count: Extra inputs are not permitted (valid keys: class, kind, n, seed)"),
    ("vae", {"kind": "reconstruct", "image": "not base64!"}, 422,
     "image: not valid base64; send a base64-encoded PNG or JPEG file"),
    ("vae", {"kind": "reconstruct", "image": base64.b64encode(b"hello").decode()}, 422,
     "image: the base64 data is not a PNG or JPEG image"),
    ("vae", {"kind": "reconstruct", "image": png_b64(np.zeros((16, 16)))}, 422,
     "image is 16×16 pixels; this model takes 8×8 images: resize it to 8×8"),
    ("autoencoder", {"kind": "score", "image": np.zeros((9, 8)).tolist()}, 422,
     "image has shape [9, 8]; this model takes [8, 8] pixel lists"),
    ("autoencoder", {"kind": "score", "image": (DIGIT * 255).tolist()}, 422,
     "pixels must be in [0, 1] (divide 0-255 values by 255)"),
    ("vae", {"kind": "interpolate", "images": [DIGIT.tolist()]}, 422,
     "images: List should have at least 2 items"),
    ("vae", {"kind": "reconstruct"}, 422, "image: Field required"),
    ("rbm", {"kind": "features", "image": [[0.5, "x"]]}, 422, "pixel lists must be"),
    ("rbm", {"kind": "sample", "class": 1}, 422, "class: Extra inputs are not permitted"),
    ("gan", ["sample"], 422, 'send a JSON object such as {"kind": "sample"'),
]


@pytest.mark.parametrize(("family", "payload", "status", "fragment"), BAD)
def test_bad_requests_say_what_to_change(clients: Callable[[str], TestClient], family: str,
                                         payload: Any, status: int, fragment: str) -> None:
    answer = invoke(clients(family), payload)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]
    assert "Traceback" not in answer.text


def test_numbers_are_not_served_as_png(clients: Callable[[str], TestClient]) -> None:
    answer = invoke(clients("autoencoder"), {"kind": "encode", "image": DIGIT.tolist()},
                    Accept="image/png")
    assert answer.status_code == 406
    assert "drop 'Accept: image/png'" in answer.json()["error"]


def test_an_unconditional_model_refuses_a_class(tmp_path: Path) -> None:
    from tests.conftest import IMAGE_TINY
    from training.entry import run_training
    from training.local import emulate_opt_ml

    # The bundled digits, trained without their classes.
    opt_ml = emulate_opt_ml(tmp_path, hyperparameters={**IMAGE_TINY["gan"],
                                                       "conditional": "false"})
    assert run_training(opt_ml, {"max_steps": "1"}) == 0, opt_ml.failure_path.read_text()
    with TestClient(create_app(opt_ml.model_dir)) as client:
        while client.get("/ping").status_code != 200:
            time.sleep(0.02)
        answer = invoke(client, {"kind": "sample", "class": 3})
    assert answer.status_code == 422
    assert "unconditional (trained without class subfolders): drop 'class'" in \
        answer.json()["error"]


@pytest.mark.parametrize("family", ["gan", "vae", "rbm", "autoencoder"])
def test_loading_fits_the_intra_op_threads_to_the_model(
        image_artifacts: Callable[[str], Path], family: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An image model is fitted like the sequence models: by a probe request, or to
    # GENKILN_NUM_THREADS when set. (Left at the default of every core, a small model on
    # a busy host answered in 100 ms instead of 10.)
    from inference.server import ModelState
    from inference.settings import ServingSettings

    before = torch.get_num_threads()
    monkeypatch.setenv("GENKILN_NUM_THREADS", "3")
    state = ModelState(model_dir=image_artifacts(family), device="cpu",
                       settings=ServingSettings.from_env())
    try:
        state.load()
        assert state.error is None and state.handler is not None
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
        if state.scheduler is not None:
            state.scheduler.close()
