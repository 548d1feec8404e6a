"""The Messages API (OpenAI chat and text completions, as TGI serves them), TGI's own routes,
the spec at /openapi.json, and draining on SIGTERM."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.errors import ClientError
from inference.openai_api import ChatMessage, render_chat
from inference.server import create_app
from tests.unit.test_server import invoke, sse_events, wait_ready
from training.models.formats.chat_template import CHAT_TEMPLATE_FILE, DEFAULT_CHAT_TEMPLATE


@pytest.fixture(scope="module")
def client(tiny_artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_artifact, feedback_store=None)) as c:
        wait_ready(c)
        yield c


def post(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, content=json.dumps(body),
                       headers={"Content-Type": "application/json"})


CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "seed": 2}


def test_the_artifact_carries_its_chat_template(tiny_artifact: Path) -> None:
    assert (tiny_artifact / CHAT_TEMPLATE_FILE).read_text() == DEFAULT_CHAT_TEMPLATE
    messages = [ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content=[{"type": "text", "text": "Why"},
                                                  {"type": "text", "text": "?"}])]
    assert render_chat(DEFAULT_CHAT_TEMPLATE, messages, "<|endoftext|>") == \
        "system: Be brief.\nuser: Why?\nassistant:"


def test_a_template_cannot_reach_python() -> None:
    hostile = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ClientError, match="is unsafe"):
        render_chat(hostile, [ChatMessage(role="user", content="x")], "")
    with pytest.raises(ClientError, match="chat template refused"):
        render_chat("{{ raise_exception('roles must alternate') }}",
                    [ChatMessage(role="user", content="x")], "")


def test_chat_on_every_route_is_the_same_answer(client: TestClient) -> None:
    direct = post(client, "/v1/chat/completions", CHAT).json()
    sagemaker = post(client, "/invocations", CHAT).json()  # TGI on SageMaker takes it too
    assert direct["object"] == "chat.completion"
    assert direct["choices"][0]["message"] == sagemaker["choices"][0]["message"]
    assert direct["choices"][0]["message"]["role"] == "assistant"
    usage = direct["usage"]
    assert usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert direct["id"] == direct["generation_id"]  # the id names the recorded generation


def test_chat_streams_openai_chunks_ending_with_done(client: TestClient) -> None:
    body = post(client, "/v1/chat/completions", {**CHAT, "stream": True,
                                                 "stream_options": {"include_usage": True}})
    chunks = body.text.split("\n\n")
    assert chunks[-2] == "data: [DONE]" and chunks[-1] == ""
    events = [json.loads(c[len("data: "):]) for c in chunks[:-2]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] <= 6
    text = "".join(e["choices"][0]["delta"]["content"] for e in events[:-1])
    whole = post(client, "/v1/chat/completions", CHAT).json()
    assert text == whole["choices"][0]["message"]["content"]
    assert events[-2]["choices"][0]["finish_reason"] in {"length", "stop"}


def test_n_choices_differ_by_seed_and_greedy_has_none(client: TestClient) -> None:
    answer = post(client, "/v1/completions", {"prompt": "Flat", "max_tokens": 8, "n": 3,
                                              "seed": 10}).json()
    assert [c["seed"] for c in answer["choices"]] == [10, 11, 12]
    greedy = post(client, "/v1/completions", {"prompt": "Flat", "max_tokens": 4,
                                              "temperature": 0}).json()
    assert greedy["choices"][0]["seed"] is None


def test_completions_echo_and_logprobs(client: TestClient) -> None:
    answer = post(client, "/v1/completions", {"prompt": "Flat", "max_tokens": 3, "echo": True,
                                              "logprobs": 2, "seed": 1}).json()
    [choice] = answer["choices"]
    assert choice["text"].startswith("Flat")
    assert all(len(t["top_logprobs"]) == 2 for t in choice["logprobs"]["content"])


def test_tgi_routes(client: TestClient) -> None:
    one = post(client, "/generate", {"inputs": "a", "parameters": {"max_new_tokens": 2}})
    assert isinstance(one.json(), dict) and "generated_text" in one.json()
    streamed = post(client, "/generate_stream", {"inputs": "a",
                                                 "parameters": {"max_new_tokens": 2}})
    assert len(sse_events(streamed.text)) == 2
    assert client.get("/health").status_code == 200
    info = client.get("/info").json()
    assert info["max_total_tokens"] == 48 and info["model_id"].startswith("genkiln-")
    [model] = client.get("/v1/models").json()["data"]
    assert model["id"] == info["model_id"]


def test_openai_routes_answer_errors_in_openais_shape(client: TestClient) -> None:
    answer = post(client, "/v1/chat/completions", {"messages": []})
    assert answer.status_code == 422
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_openapi_describes_every_body_invocations_takes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    names = {ref["$ref"].rsplit("/", 1)[1] for ref in body["schema"]["oneOf"]}
    assert names == {"GenerateRequest", "ChatRequest", "CompletionRequest", "FeedbackRequest",
                     "InfoRequest"}
    schemas = spec["components"]["schemas"]
    assert {"best_of", "typical_p", "watermark", "top_n_tokens"} <= set(
        schemas["GenerateParameters"]["properties"])
    assert "422" in spec["paths"]["/invocations"]["post"]["responses"]


def test_openapi_of_an_image_family_names_its_kinds(image_artifacts: Any) -> None:
    with TestClient(create_app(image_artifacts("autoencoder"), feedback_store=None)) as c:
        wait_ready(c)
        spec = c.get("/openapi.json").json()
    body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]
    names = {ref["$ref"].rsplit("/", 1)[1] for ref in body["schema"]["oneOf"]}
    assert {"EncodeRequest", "ScoreRequest", "FeedbackRequest"} <= names
    assert "/v1/chat/completions" not in spec["paths"]


def test_draining_ends_running_streams_with_an_event_that_says_why(
        tiny_artifact: Path) -> None:
    with TestClient(create_app(tiny_artifact, feedback_store=None)) as c:
        wait_ready(c)
        scheduler = c.app.state.model.scheduler  # type: ignore[attr-defined]
        decoder = scheduler.decode_loop.decoder
        real_step = decoder.step

        def slow_step(tokens: Any) -> Any:  # a model slower than the drain
            time.sleep(0.05)
            return real_step(tokens)

        decoder.step = slow_step
        payload = {"inputs": "a", "stream": True, "parameters": {"max_new_tokens": 40}}
        events: list[Any] = []
        started = threading.Event()

        def read() -> None:
            with c.stream("POST", "/invocations", content=json.dumps(payload)) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        events.append(json.loads(line[5:]))
                        started.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert started.wait(30)
        scheduler.drain(0.3)
        reader.join(30)
        assert events[-1]["error_type"] == "overloaded"
        assert "shutting down" in events[-1]["error"] and "cut after" in events[-1]["error"]
        assert 1 <= len(events) - 1 < 40
        refused = invoke(c, {"inputs": "a"})
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
        assert c.get("/ping").json() == {"status": "draining"}
        decoder.step = real_step
