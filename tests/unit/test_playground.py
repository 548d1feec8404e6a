"""The playground's backend in front of the real server, reached the SageMaker way.

The SageMaker runtime is the one thing replaced: `RuntimeToServer` answers
InvokeEndpoint and InvokeEndpointWithResponseStream by passing the request to the real
server app, as SageMaker passes it to the container (InferenceId becomes the
X-Amzn-SageMaker-Inference-Id header; a 4xx becomes botocore's ModelError).
"""

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError as BotoClientError
from fastapi.testclient import TestClient

from genkiln.client import EndpointClient
from genkiln.playground.app import build_payload, create_playground
from inference.server import create_app
from tests.unit.test_server import wait_ready
from training.feedback import LocalFeedbackStore, read_feedback


class RuntimeToServer:
    def __init__(self, server: TestClient) -> None:
        self.server = server
        self.inference_ids: list[str | None] = []

    def _post(self, Body: bytes, ContentType: str, Accept: str,
              InferenceId: str | None = None) -> Any:
        self.inference_ids.append(InferenceId)
        headers = {"Content-Type": ContentType, "Accept": Accept}
        if InferenceId is not None:
            headers["X-Amzn-SageMaker-Inference-Id"] = InferenceId
        answer = self.server.post("/invocations", content=Body, headers=headers)
        if answer.status_code >= 400:
            raise BotoClientError({"Error": {"Code": "ModelError", "Message": "model error"},
                                   "OriginalStatusCode": answer.status_code,
                                   "OriginalMessage": answer.text}, "InvokeEndpoint")
        return answer

    def invoke_endpoint(self, *, EndpointName: str, **kwargs: Any) -> dict[str, Any]:
        return {"Body": io.BytesIO(self._post(**kwargs).content)}

    def invoke_endpoint_with_response_stream(self, *, EndpointName: str, **kwargs: Any
                                             ) -> dict[str, Any]:
        content = self._post(**kwargs).content
        # SageMaker cuts the stream into parts anywhere, not at line ends.
        parts = [content[i:i + 7] for i in range(0, len(content), 7)]
        return {"Body": [{"PayloadPart": {"Bytes": p}} for p in parts]}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def runtime(tiny_artifact: Path, store_dir: Path) -> Iterator[RuntimeToServer]:
    with TestClient(create_app(tiny_artifact,
                               feedback_store=LocalFeedbackStore(store_dir))) as server:
        wait_ready(server)
        yield RuntimeToServer(server)


@pytest.fixture(scope="module")
def page(runtime: RuntimeToServer) -> TestClient:
    client = EndpointClient(endpoint_name="genkiln-dev-endpoint", runtime_client=runtime)
    return TestClient(create_playground(client))


def lines(answer: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in answer.text.splitlines()]


def test_the_page_and_its_scripts_are_served_locally(page: TestClient) -> None:
    html = page.get("/").text
    assert "genkiln playground" in html
    for script in ("/static/app.js", "/static/midi.js", "/static/style.css"):
        assert script in html
        assert page.get(script).status_code == 200
    assert "http" not in html.replace("http-equiv", "")  # nothing from a CDN


def test_info_comes_through_invocations_of_an_endpoint(page: TestClient) -> None:
    info = page.get("/api/info").json()
    assert info["family"] == "transformer"
    assert info["playground"]["input"] == "text"


def test_generate_streams_tokens_then_names_the_generation(page: TestClient,
                                                           store_dir: Path) -> None:
    events = lines(page.post("/api/generate", json={"prompt": "Errors should", "seed": 11}))
    *tokens, done = events
    assert tokens and all(e["type"] == "token" for e in tokens)
    assert done["type"] == "done" and done["seed"] == 11
    assert "".join(e["text"] for e in tokens) == done["output"]["text"]
    record = LocalFeedbackStore(store_dir).get_generation(done["generation_id"])
    assert record is not None and record.output == done["output"]
    again = lines(page.post("/api/generate", json={"prompt": "Errors should", "seed": 11}))
    assert again[-1]["output"] == done["output"]  # the same seed, the same text


def test_better_and_worse_are_preferences_between_two_generations(page: TestClient,
                                                                  store_dir: Path) -> None:
    a = lines(page.post("/api/generate", json={"prompt": "Now", "seed": 1}))[-1]
    b = lines(page.post("/api/generate", json={"prompt": "Now", "seed": 2}))[-1]
    answer = page.post("/api/feedback", json={"chosen": b["generation_id"],
                                              "rejected": a["generation_id"]})
    assert answer.status_code == 200, answer.text
    stored = read_feedback(store_dir)
    assert (b["generation_id"], a["generation_id"]) in [
        (f.chosen, f.rejected) for f in stored.feedback]


def test_the_endpoints_complaints_reach_the_page(page: TestClient) -> None:
    unknown = page.post("/api/feedback", json={"generation_id": "gen-nope", "rating": 5})
    assert unknown.status_code == 404
    assert "no generation 'gen-nope'" in unknown.json()["error"]
    bad_seed = page.post("/api/generate", json={"prompt": "x", "seed": -1})
    assert bad_seed.status_code == 400 and "seed" in bad_seed.json()["error"]
    too_long = lines(page.post("/api/generate", json={
        "prompt": "x", "request": {"parameters": {"max_new_tokens": 100_000}}}))
    assert too_long[-1]["type"] == "error"
    assert "max_new_tokens" in too_long[-1]["error"]


def test_an_inference_id_names_the_generation(runtime: RuntimeToServer) -> None:
    client = EndpointClient(endpoint_name="genkiln-dev-endpoint", runtime_client=runtime)
    [item] = client.generate("Now", max_new_tokens=3)
    assert item["generation_id"].startswith("gen-")
    [named] = client.invoke({"inputs": "Now", "parameters": {"max_new_tokens": 3}},
                            inference_id="ticket-9")
    assert named["generation_id"] == "ticket-9" and runtime.inference_ids[-1] == "ticket-9"
    assert client.feedback(generation_id="ticket-9", rating=4)["status"] == "recorded"


@pytest.mark.parametrize(("hints", "expected"), [
    ({"input": "text", "input_field": "inputs", "stream": True,
      "template": {"parameters": {"max_new_tokens": 8}}},
     {"inputs": "hi", "stream": True, "parameters": {"max_new_tokens": 8, "seed": 3}}),
    ({"input": "midi", "input_field": "melody_midi", "template": {"kind": "accompany"}},
     {"kind": "accompany", "melody_midi": "TVRoZA==", "seed": 3}),
    ({"input": "none", "template": {"kind": "sample", "n": 1}},
     {"kind": "sample", "n": 1, "seed": 3}),
])
def test_requests_take_the_shape_info_describes(hints: dict[str, Any],
                                                expected: dict[str, Any]) -> None:
    assert build_payload(hints, prompt="hi", midi_base64="TVRoZA==", seed=3) == expected


def test_a_server_that_is_down_is_one_line_on_the_page_and_in_the_log(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    down = "http://127.0.0.1:9"  # the discard port: nothing listens there
    app = create_playground(EndpointClient(url=down))
    with caplog.at_level("WARNING", logger="genkiln.playground"), \
            TestClient(app, raise_server_exceptions=False) as page:
        info = page.get("/api/info")
        generated = page.post("/api/generate", json={"prompt": "hi"})
        judged = page.post("/api/feedback", json={"generation_id": "g", "rating": 3})
    for answer in (info, generated, judged):
        assert answer.status_code == 502
        assert f"cannot reach {down}" in answer.json()["error"]
        assert "is the server running?" in answer.json()["error"]
    assert len(caplog.records) == 3 and not any(r.exc_info for r in caplog.records)
    assert all("\n" not in r.getMessage() for r in caplog.records)

    from genkiln.cli import main

    assert main(["invoke", "hello", "--url", down]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"genkiln invoke: cannot reach {down}") and error.count("\n") == 1
