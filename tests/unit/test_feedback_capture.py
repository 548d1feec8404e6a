"""Generation ids, seeds and feedback requests, through the real server and model."""

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.server import create_app
from tests.unit.test_server import invoke, sse_events, wait_ready
from training.feedback import LocalFeedbackStore, read_feedback

SAMPLED = {"max_new_tokens": 8, "temperature": 0.9}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def client(tiny_artifact: Path, store_dir: Path) -> Iterator[TestClient]:
    app = create_app(tiny_artifact, feedback_store=LocalFeedbackStore(store_dir))
    with TestClient(app) as c:
        wait_ready(c)
        yield c


def generate(client: TestClient, prompt: str = "Beautiful is", **headers: str) -> dict[str, Any]:
    answer = invoke(client, {"inputs": prompt, "parameters": SAMPLED}, **headers)
    assert answer.status_code == 200, answer.text
    [item] = answer.json()
    assert answer.headers["x-genkiln-generation-id"] == item["generation_id"]
    return dict(item)


def test_a_generation_names_its_id_seed_and_parameters_and_is_recorded(
        client: TestClient, store_dir: Path) -> None:
    item = generate(client)
    assert item["generation_id"].startswith("gen-")
    assert isinstance(item["seed"], int)  # the caller gave none: the server picked one
    assert item["parameters"] == {**SAMPLED, "seed": item["seed"]}
    record = LocalFeedbackStore(store_dir).get_generation(item["generation_id"])
    assert record is not None
    assert record.family == "transformer" and record.kind == "generate"
    assert record.inputs == "Beautiful is"
    assert record.output == {"text": item["generated_text"]}
    assert record.parameters["seed"] == item["seed"]


def test_the_returned_seed_reproduces_the_generation(client: TestClient) -> None:
    first = generate(client)
    again = invoke(client, {"inputs": "Beautiful is",
                            "parameters": {**SAMPLED, "seed": first["seed"]}}).json()[0]
    assert again["generated_text"] == first["generated_text"]
    assert again["generation_id"] != first["generation_id"]


def test_the_callers_inference_id_becomes_the_generation_id(client: TestClient) -> None:
    item = generate(client, **{"X-Amzn-SageMaker-Inference-Id": "req-42.a"})
    assert item["generation_id"] == "req-42.a"
    batch = invoke(client, {"inputs": ["a", "b"], "parameters": SAMPLED},
                   **{"X-Amzn-SageMaker-Inference-Id": "batch-7"})
    assert [i["generation_id"] for i in batch.json()] == ["batch-7-0", "batch-7-1"]
    # Headers carry the ids of a list in a bounded form, however long the list.
    assert batch.headers["x-amzn-sagemaker-custom-attributes"] == \
        "generation_id=batch-7-{0..1}"
    assert batch.headers["x-genkiln-generation-id"] == "batch-7-{0..1}"


def test_a_malformed_inference_id_is_refused_with_what_to_send(client: TestClient) -> None:
    answer = invoke(client, {"inputs": "a"}, **{"X-Amzn-SageMaker-Inference-Id": "no spaces"})
    assert answer.status_code == 400
    assert "letters, digits" in answer.json()["error"]
    assert "leave the header out" in answer.json()["error"]


def test_a_stream_names_its_generation_in_the_final_event(client: TestClient,
                                                          store_dir: Path) -> None:
    answer = invoke(client, {"inputs": "Errors should", "parameters": SAMPLED, "stream": True})
    events = sse_events(answer.text)
    final = events[-1]
    assert all("generation_id" not in e for e in events[:-1])
    assert final["generation_id"] == answer.headers["x-genkiln-generation-id"]
    assert final["seed"] == final["details"]["seed"]
    record = LocalFeedbackStore(store_dir).get_generation(final["generation_id"])
    assert record is not None and record.output == {"text": final["generated_text"]}


def test_ratings_and_preferences_are_stored_once(client: TestClient, store_dir: Path) -> None:
    a, b = generate(client), generate(client)
    rating = {"feedback": {"generation_id": a["generation_id"], "rating": 5}}
    first = invoke(client, rating)
    retry = invoke(client, rating)
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json()  # the same answer for a retry
    preference = {"feedback": {"feedback_id": "pref-1", "chosen": b["generation_id"],
                               "rejected": a["generation_id"], "comment": "more vivid"}}
    assert invoke(client, preference).json()["feedback"]["feedback_id"] == "pref-1"
    assert invoke(client, preference).status_code == 200
    stored = read_feedback(store_dir)
    mine = [f for f in stored.feedback
            if a["generation_id"] in (f.generation_id, f.chosen, f.rejected)]
    assert len(mine) == 2  # two judgements, each once
    [(chosen, _)] = [p for p in stored.preferences()
                            if p[1].generation_id == a["generation_id"]]
    assert chosen.output["text"] == b["generated_text"]
    # The same id with another judgement is refused, not overwritten.
    changed = {"feedback": {**preference["feedback"], "comment": "changed my mind"}}
    refused = invoke(client, changed)
    assert refused.status_code == 409 and "send a new feedback_id" in refused.json()["error"]


@pytest.mark.parametrize(("feedback", "status", "hint"), [
    ({"generation_id": "gen-unknown", "rating": 4}, 404, "no generation 'gen-unknown'"),
    ({"generation_id": "GEN", "rating": 9}, 422, "rating must be a whole number from 1 to 5"),
    ({"comment": "nice"}, 422, "a rating (with generation_id) or a preference"),
    ({"rating": 3, "stars": 2}, 422, "unknown feedback field(s) stars"),
])
def test_bad_feedback_says_what_to_change(client: TestClient, feedback: dict[str, Any],
                                          status: int, hint: str) -> None:
    if feedback.get("generation_id") == "GEN":
        feedback = {**feedback, "generation_id": generate(client)["generation_id"]}
    answer = invoke(client, {"feedback": feedback})
    assert answer.status_code == status
    assert hint in answer.json()["error"]


def test_info_is_also_a_request_kind_and_describes_the_playground(client: TestClient) -> None:
    info = invoke(client, {"info": {}}).json()
    assert info == client.get("/info").json()
    assert info["family"] == "transformer" and info["feedback"] == {"enabled": True}
    assert info["playground"]["input"] == "text" and info["playground"]["stream"] is True


def test_with_capture_off_ids_are_given_and_feedback_is_refused(tiny_artifact: Path,
                                                                tmp_path: Path) -> None:
    with TestClient(create_app(tiny_artifact, feedback_store=None)) as c:
        wait_ready(c)
        item = generate(c)
        answer = invoke(c, {"feedback": {"generation_id": item["generation_id"], "rating": 1}})
        assert answer.status_code == 409
        assert "feedback capture is off" in answer.json()["error"]
        assert c.get("/info").json()["feedback"] == {"enabled": False}


def test_image_generations_are_recorded_as_png(image_artifacts: Any, tmp_path: Path) -> None:
    store = LocalFeedbackStore(tmp_path)
    with TestClient(create_app(image_artifacts("gan"), feedback_store=store)) as c:
        wait_ready(c)
        answer = invoke(c, {"kind": "sample", "n": 1, "class": "7"}).json()
        record = store.get_generation(answer["generation_id"])
        assert record is not None and record.kind == "sample"
        assert record.output == {"png_base64": answer["images"][0]}
        assert record.parameters == {"n": 1, "class": "7", "seed": answer["seed"]}
        png = invoke(c, {"kind": "sample", "seed": 3}, Accept="image/png")
        assert png.headers["content-type"] == "image/png"
        record = store.get_generation(png.headers["x-genkiln-generation-id"])
        assert record is not None
        assert base64.b64decode(record.output["png_base64"]) == png.content


def test_a_malformed_request_hears_only_about_its_own_fields(client: TestClient) -> None:
    answer = invoke(client, {"inputs": "hi", "parameters": {"temperature": "hot"}})
    assert answer.status_code == 422
    assert "temperature" in answer.json()["error"] and "seed" not in answer.json()["error"]
