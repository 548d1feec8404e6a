"""Malformed, hostile and oversized requests: each gets a 4xx JSON error that says what to
change, nothing else (no 500, no stack trace, no record stored before a failure)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference import intake
from inference.errors import ClientError
from inference.server import create_app
from tests.unit.test_server import invoke, wait_ready


@pytest.fixture(scope="module")
def client(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[TestClient]:
    from training.feedback import LocalFeedbackStore

    store = LocalFeedbackStore(tmp_path_factory.mktemp("hostile-feedback"))
    with TestClient(create_app(tiny_artifact, feedback_store=store)) as c:
        wait_ready(c)
        yield c


def post_raw(client: TestClient, body: bytes, content_type: str = "application/json",
             path: str = "/invocations") -> Any:
    return client.post(path, content=body, headers={"Content-Type": content_type})


HOSTILE: list[tuple[str, bytes, int, str]] = [
    ("deep nesting", b'{"inputs": "a", "x": ' + b"[" * 300 + b"]" * 300 + b"}", 400,
     "nests deeper than 32 levels"),
    ("very deep nesting", b"[" * 200_000 + b"]" * 200_000, 400, "nests deeper"),
    ("a 5,000-digit integer", b'{"inputs": "a", "n": ' + b"9" * 5000 + b"}", 400,
     "too long to read"),
    ("a 100-digit integer", b'{"inputs": "a", "parameters": {"seed": ' + b"9" * 100 + b"}}",
     400, "parameters.seed: the integer is out of range"),
    ("NaN", b'{"inputs": "a", "parameters": {"temperature": NaN}}', 400, "NaN, which is not JSON"),
    ("Infinity", b'{"inputs": "a", "parameters": {"top_p": -Infinity}}', 400,
     "-Infinity, which is not JSON"),
    ("an overflowing float", b'{"inputs": "a", "parameters": {"temperature": 1e400}}', 400,
     "parameters.temperature: the number overflows to infinity"),
    ("a lone surrogate in a prompt", b'{"inputs": "ok \\ud800"}', 400,
     "inputs: holds a lone UTF-16 surrogate (\\ud800) at character 3"),
    ("a lone surrogate in a stop sequence",
     b'{"inputs": "a", "parameters": {"stop": ["\\udfff"]}}', 400, "parameters.stop.0"),
    ("a lone surrogate in a key", b'{"inputs": "a", "\\ud800": 1}', 400, "<key>"),
    ("a lone surrogate in feedback",
     b'{"feedback": {"generation_id": "g", "rating": 5, "comment": "\\ud83d"}}', 400,
     "feedback.comment"),
    ("raw surrogate bytes", b'{"inputs": "\xed\xa0\x80"}', 400, "not UTF-8"),
    ("Latin-1 bytes", b'{"inputs": "caf\xe9"}', 400, "not UTF-8"),
    ("truncated JSON", b'{"inputs": ', 400, "not valid JSON"),
    ("an empty body", b"", 400, "not valid JSON"),
    ("a JSON number", b"7", 422, "send a JSON object such as {\"inputs\""),
    ("a JSON null", b"null", 422, "send a JSON object"),
    ("a list of prompts over the limit", json.dumps({"inputs": ["a"] * 65}).encode(), 422,
     "at most 64 per request"),
    ("inputs of the wrong type", b'{"inputs": {"a": 1}}', 422, "inputs"),
    ("a prompt no context can hold", json.dumps({"inputs": "w " * 20_000}).encode(), 422,
     "more than this model's context"),
    ("best_of without sampling", b'{"inputs": "a", "parameters": {"best_of": 2}}', 422,
     "you must use sampling when best_of is > 1"),
    ("best_of with a seed",
     b'{"inputs": "a", "parameters": {"best_of": 2, "do_sample": true, "seed": 1}}', 422,
     "seed must not be set when best_of > 1"),
    ("best_of streamed",
     b'{"inputs": "a", "stream": true, "parameters": {"best_of": 2, "do_sample": true}}', 422,
     "not supported when streaming"),
    ("a grammar", b'{"inputs": "a", "parameters": {"grammar": {"type": "regex", "value": "a"}}}',
     422, "grammar is not supported"),
    ("top_n_tokens over the maximum", b'{"inputs": "a", "parameters": {"top_n_tokens": 6}}',
     422, "parameters.top_n_tokens"),
    ("a seed that is not a number", b'{"inputs": "a", "parameters": {"seed": "five"}}', 422,
     "parameters.seed"),
    ("chat without messages", b'{"messages": []}', 422, "messages"),
    ("chat with an image part",
     b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}', 422,
     "reads text only"),
    ("chat with tools", b'{"messages": [{"role": "user", "content": "a"}], "tools": [{}]}',
     422, "cannot call tools"),
    ("an unknown media type", b"a,b", 415, "send application/json"),
]


@pytest.mark.parametrize(("what", "body", "status", "fragment"), HOSTILE,
                         ids=[h[0] for h in HOSTILE])
def test_hostile_bodies_get_a_4xx_that_says_what_to_change(
        client: TestClient, what: str, body: bytes, status: int, fragment: str) -> None:
    content_type = "text/csv" if what == "an unknown media type" else "application/json"
    answer = post_raw(client, body, content_type)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error", "error_type"} and fragment in error["error"]
    assert "Traceback" not in answer.text


def test_the_ping_answers_while_a_large_body_is_taken_apart(client: TestClient) -> None:
    """Parsing runs on the intake threads: the event loop never does it."""
    seen: list[str] = []
    real = intake.parse_body

    def spy(body: bytes, content_type: str | None) -> Any:
        seen.append(threading.current_thread().name)
        return real(body, content_type)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("inference.server.parse_body", spy)
        answer = invoke(client, {"inputs": ["x"] * 64, "parameters": {"max_new_tokens": 1}})
    assert answer.status_code == 200
    assert seen and all(name.startswith("genkiln-intake") for name in seen)


def test_a_feedback_request_that_fails_stores_nothing_and_retries_alike(
        client: TestClient) -> None:
    body = b'{"feedback": {"generation_id": "gen-x", "rating": 5, "comment": "\\udc00"}}'
    first, again = post_raw(client, body), post_raw(client, body)
    assert first.status_code == again.status_code == 400
    assert first.json() == again.json()


def test_headers_stay_bounded_however_many_prompts(client: TestClient) -> None:
    answer = invoke(client, {"inputs": ["a"] * 64, "parameters": {"max_new_tokens": 1}},
                    **{"X-Amzn-SageMaker-Inference-Id": "many"})
    assert answer.status_code == 200
    assert len(answer.json()) == 64 and answer.json()[63]["generation_id"] == "many-63"
    assert answer.headers["x-genkiln-generation-id"] == "many-{0..63}"
    # botocore refuses CustomAttributes over 1,024 characters.
    assert len(answer.headers["x-amzn-sagemaker-custom-attributes"]) < 1024


def test_unknown_parameters_are_ignored_and_named(client: TestClient) -> None:
    params = {"max_new_tokens": 2, "sagemaker_base_url": "https://x", "frobnicate": 1}
    answer = invoke(client, {"inputs": "a", "parameters": params, "extra": True})
    assert answer.status_code == 200
    assert answer.headers["x-genkiln-ignored-parameters"] == "frobnicate, sagemaker_base_url"


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and "POST to /invocations" in missing.json()["error"]
    wrong = client.get("/invocations")
    assert wrong.status_code == 405 and "GET is not allowed" in wrong.json()["error"]


def test_a_reused_inference_id_with_another_request_is_409(client: TestClient) -> None:
    first = invoke(client, {"inputs": "Flat is", "parameters": {"max_new_tokens": 4,
                                                                 "do_sample": True}},
                   **{"X-Amzn-SageMaker-Inference-Id": "once-1"})
    assert first.status_code == 200
    # The same request again replays the same generation (the same seed, the same text).
    again = invoke(client, {"inputs": "Flat is", "parameters": {"max_new_tokens": 4,
                                                                 "do_sample": True}},
                   **{"X-Amzn-SageMaker-Inference-Id": "once-1"})
    assert again.status_code == 200 and again.json() == first.json()
    other = invoke(client, {"inputs": "Something else"},
                   **{"X-Amzn-SageMaker-Inference-Id": "once-1"})
    assert other.status_code == 409 and "send a new id" in other.json()["error"]


def test_a_seed_given_as_a_string_is_parsed_and_reported(client: TestClient) -> None:
    params = {"max_new_tokens": 3, "do_sample": True, "details": True}
    answer = invoke(client, {"inputs": "a", "parameters": {**params, "seed": "5"}})
    [item] = answer.json()
    assert item["seed"] == 5 and item["details"]["seed"] == 5
    [same] = invoke(client, {"inputs": "a", "parameters": {**params, "seed": 5}}).json()
    assert same["generated_text"] == item["generated_text"]


def test_a_greedy_answer_reports_no_seed(client: TestClient) -> None:
    [item] = invoke(client, {"inputs": "a", "parameters": {"max_new_tokens": 2,
                                                           "details": True}}).json()
    assert item["seed"] is None and item["details"]["seed"] is None


@pytest.mark.parametrize("text", ["", "plain", "东京 🙂", "x" * 10_000])
def test_intake_takes_any_valid_text(text: str) -> None:
    assert intake.parse_body(json.dumps({"inputs": text}).encode(), None) == {"inputs": text}


def test_intake_allows_surrogate_pairs() -> None:
    assert intake.parse_body(b'{"inputs": "\\ud83d\\ude00"}', None) == {"inputs": "😀"}


def test_intake_depth_limit_is_exact() -> None:
    ok = b"[" * intake.MAX_DEPTH + b"]" * intake.MAX_DEPTH
    assert intake.parse_body(ok, None) is not None
    with pytest.raises(ClientError, match="deeper"):
        intake.parse_body(b"[" + ok + b"]", None)
