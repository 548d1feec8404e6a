"""The server in-process: the real app, the real model, over an ASGI test client."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference import server as server_module
from inference.server import create_app


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ping").status_code != 200:
        assert time.monotonic() < deadline, client.get("/ping").json()
        time.sleep(0.02)


@pytest.fixture(scope="module")
def client(tiny_artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_artifact, max_request_bytes=4096)) as c:
        wait_ready(c)
        yield c


def sse_events(body: str) -> list[Any]:
    """The JSON events of a server-sent-event stream: `data:` lines, blank-line separated."""
    chunks = [c for c in body.split("\n\n") if c]
    assert chunks and all(c.startswith("data:") for c in chunks), body
    return [json.loads(c[len("data:"):]) for c in chunks]


def invoke(client: TestClient, payload: Any, **headers: str) -> Any:
    return client.post("/invocations", content=json.dumps(payload),
                       headers={"Content-Type": "application/json", **headers})


def test_ping_is_503_until_the_model_is_loaded(tiny_artifact: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_load = server_module.ModelState.load

    def slow_load(self: server_module.ModelState) -> None:
        release.wait(10)
        real_load(self)

    monkeypatch.setattr(server_module.ModelState, "load", slow_load)
    with TestClient(create_app(tiny_artifact)) as c:
        assert c.get("/ping").status_code == 503
        assert c.get("/ping").json() == {"status": "loading"}
        refused = invoke(c, {"inputs": "hi"})
        assert refused.status_code == 503 and "retry when /ping is 200" in refused.json()["error"]
        release.set()
        wait_ready(c)
        assert c.get("/ping").json() == {"status": "ready", "family": "transformer"}


def test_ping_reports_a_broken_artifact(tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path)) as c:
        deadline = time.monotonic() + 10
        while c.get("/ping").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        answer = c.get("/ping")
        assert answer.status_code == 503
        assert "genkiln.json is missing" in answer.json()["error"]


def test_generate_in_tgi_shape(client: TestClient) -> None:
    answer = invoke(client, {"inputs": "Beautiful is", "parameters": {
        "max_new_tokens": 6, "do_sample": True, "seed": 3, "details": True}})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()
    details = result["details"]
    assert details["generated_tokens"] == len(details["tokens"]) <= 6
    assert details["seed"] == 3
    assert details["finish_reason"] in {"length", "eos_token"}
    text = "".join(t["text"] for t in details["tokens"])
    assert result["generated_text"] == text


def test_same_seed_same_text_and_full_text(client: TestClient) -> None:
    payload = {"inputs": "Now is", "parameters": {"max_new_tokens": 12, "temperature": 1.3,
                                                  "top_p": 0.95, "seed": 42}}
    first = invoke(client, payload).json()[0]["generated_text"]
    assert invoke(client, payload).json()[0]["generated_text"] == first
    payload["parameters"]["return_full_text"] = True
    assert invoke(client, payload).json()[0]["generated_text"] == "Now is" + first


def test_batch_of_prompts(client: TestClient) -> None:
    answer = invoke(client, {"inputs": ["a", "b", "c"], "parameters": {"max_new_tokens": 3}})
    assert answer.status_code == 200 and len(answer.json()) == 3


def test_stream_is_json_lines_when_asked_ending_with_the_full_text(client: TestClient) -> None:
    payload = {"inputs": "Simple is", "stream": True,
               "parameters": {"max_new_tokens": 10, "seed": 5, "do_sample": True}}
    with client.stream("POST", "/invocations", content=json.dumps(payload),
                       headers={"Content-Type": "application/json",
                                "Accept": "application/jsonlines"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/jsonlines")
        body = response.read().decode()
    lines = body.splitlines()
    assert body.endswith("\n") and all(lines)
    events = [json.loads(line) for line in lines]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["generated_text"] is None for e in events[:-1])
    final = events[-1]
    assert final["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert final["details"]["generated_tokens"] == len(events)
    # The streamed text is the text a non-streamed request with the same seed gives.
    payload["stream"] = False
    assert invoke(client, payload).json()[0]["generated_text"] == final["generated_text"]


@pytest.mark.parametrize("accept", [None, "*/*", "text/event-stream"])
def test_a_stream_is_server_sent_events_unless_json_lines_are_asked_for(
        client: TestClient, accept: str | None) -> None:
    # As text-generation-inference: TGI clients (huggingface_hub) send Accept: */* and
    # read only `data:` lines.
    payload = {"inputs": "x", "stream": True, "parameters": {"max_new_tokens": 3}}
    headers = {"Content-Type": "application/json", **({"Accept": accept} if accept else {})}
    with client.stream("POST", "/invocations", content=json.dumps(payload),
                       headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = sse_events(body)
    assert events[-1]["details"]["finish_reason"] in {"length", "eos_token"}
    assert all(set(e) >= {"index", "token", "generated_text", "details"} for e in events)
    assert events[-1]["details"]["input_length"] >= 1


def test_stop_sequence_ends_generation(client: TestClient) -> None:
    # Sampled with a seed, the same request makes the same tokens until it stops; stop
    # on a piece of text from the middle of the free-running answer.
    params = {"max_new_tokens": 20, "do_sample": True, "seed": 11, "details": True}
    free = invoke(client, {"inputs": "The", "parameters": params}).json()[0]
    pieces = [t["text"] for t in free["details"]["tokens"] if t["text"].strip()]
    assert pieces, "the model produced no text to stop on"
    stop = pieces[len(pieces) // 2]
    answer = invoke(client, {"inputs": "The", "parameters": {**params, "stop": [stop]}}
                    ).json()[0]
    assert answer["details"]["finish_reason"] == "stop_sequence"
    assert stop in answer["generated_text"]
    assert len(answer["details"]["tokens"]) <= len(free["details"]["tokens"])
    assert free["generated_text"].startswith(answer["generated_text"])


@pytest.mark.parametrize(("payload", "status", "fragment"), [
    ({"prompt": 5}, 422, "prompt"),
    ({"messages": []}, 422, "messages: List should have at least 1 item"),
    ({"inputs": "hi", "parameters": {"max_new_tokens": 0}}, 422,
     "parameters.max_new_tokens: Input should be greater than or equal to 1"),
    ({"inputs": "hi", "parameters": {"temperature": "hot"}}, 422, "parameters.temperature"),
    ({"inputs": "hi", "parameters": {"max_new_tokens": 500}}, 422,
     "must fit this model's context of 48 tokens"),
    ({"inputs": ["a", "b"], "stream": True}, 422, "a list of inputs can't be streamed"),
    ({"inputs": []}, 422, "give a prompt or a non-empty list"),
    ({"inputs": 7}, 422, "inputs"),
])
def test_bad_requests_say_what_to_change(client: TestClient, payload: Any, status: int,
                                         fragment: str) -> None:
    answer = invoke(client, payload)
    assert answer.status_code == status
    body = answer.json()
    assert body["error_type"] == "validation"
    assert fragment in body["error"]
    assert "Traceback" not in answer.text


def test_malformed_json_is_400(client: TestClient) -> None:
    answer = client.post("/invocations", content=b'{"inputs": ',
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "body is not valid JSON" in answer.json()["error"]


def test_unsupported_content_type_is_415(client: TestClient) -> None:
    answer = client.post("/invocations", content=b"a,b", headers={"Content-Type": "text/csv"})
    assert answer.status_code == 415 and "send application/json" in answer.json()["error"]


def test_long_prompt_can_be_truncated(client: TestClient) -> None:
    long = "Beautiful is better than ugly. " * 20
    assert invoke(client, {"inputs": long, "parameters": {"max_new_tokens": 4}}
                  ).status_code == 422
    answer = invoke(client, {"inputs": long, "parameters": {"max_new_tokens": 4,
                                                            "truncate": 20}})
    assert answer.status_code == 200


def test_oversized_payload_is_413(client: TestClient) -> None:
    answer = invoke(client, {"inputs": "x" * 5000})  # the fixture's limit is 4,096 bytes
    assert answer.status_code == 413
    assert "exceeds 4,096 bytes" in answer.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"inputs": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    answer = client.post("/invocations", content=chunks(),
                         headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_internal_errors_hide_the_traceback(client: TestClient,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    handler = client.app.state.model.handler  # type: ignore[attr-defined]

    def broken(request: Any, **callbacks: Any) -> Any:
        raise RuntimeError("secret internals /home/me/model.py line 3")

    monkeypatch.setattr(handler, "jobs", broken)
    answer = invoke(client, {"inputs": "hi"})
    assert answer.status_code == 500
    assert "internal error while generating" in answer.json()["error"]
    assert "secret" not in answer.text and "Traceback" not in answer.text


def test_unknown_headers_are_ignored(client: TestClient) -> None:
    answer = invoke(client, {"inputs": "hi", "parameters": {"max_new_tokens": 2}},
                    **{"X-Amzn-SageMaker-Custom-Attributes": "trace=1", "X-Whatever": "1"})
    assert answer.status_code == 200


def test_info_describes_the_model(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["family"] == "transformer" and info["model_args"]["block_size"] == 48
