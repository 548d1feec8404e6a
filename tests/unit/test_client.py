"""EndpointClient: line reassembly, and the SageMaker path with AWS replaced."""

import base64
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from fastapi.testclient import TestClient
from moto import mock_aws

from genkiln.client import EndpointClient, EndpointError, LineBuffer, parse_events
from inference.server import create_app
from tests.unit.test_server import wait_ready

PAYLOAD = {"inputs": "Errors should", "stream": True,
           "parameters": {"max_new_tokens": 8, "seed": 9, "do_sample": True}}


@pytest.fixture(scope="module")
def server_stream(tiny_artifact: Path) -> tuple[bytes, bytes]:
    """The real server's bytes for PAYLOAD, streamed and not streamed."""
    with TestClient(create_app(tiny_artifact)) as c:
        wait_ready(c)
        streamed = c.post("/invocations", content=json.dumps(PAYLOAD)).content
        whole = c.post("/invocations", content=json.dumps({**PAYLOAD, "stream": False})).content
    return streamed, whole


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_line_buffer_reassembles_any_split() -> None:
    lines = [b'{"a": 1}', b'{"b": "\xc3\xa9\\n"}', b'{"c": [1, 2]}']
    data = b"\n".join(lines) + b"\n"
    for size in range(1, len(data) + 1):
        buffer = LineBuffer()
        out = [line for chunk in split_every(data, size) for line in buffer.feed(chunk)]
        assert out + buffer.flush() == lines


def test_parse_events_handles_a_missing_final_newline_and_sse() -> None:
    assert list(parse_events([b'{"x": 1}\n{"x"', b": 2}"])) == [{"x": 1}, {"x": 2}]
    assert list(parse_events([b'data:{"x": 3}\n\n'])) == [{"x": 3}]


def test_parse_events_raises_on_an_error_event() -> None:
    with pytest.raises(EndpointError, match="stopped the stream: boom"):
        list(parse_events([b'{"error": "boom", "error_type": "generation"}\n']))


class FakeStreamingRuntime:
    """Stands in for AWS only: answers InvokeEndpointWithResponseStream with PayloadParts."""

    def __init__(self, parts: list[dict[str, Any]]) -> None:
        self.parts = parts
        self.calls: list[dict[str, Any]] = []

    def invoke_endpoint_with_response_stream(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"Body": iter(self.parts), "ContentType": "application/jsonlines"}


@pytest.mark.parametrize("part_size", [1, 7, 64, 100_000])
def test_sagemaker_stream_reassembles_payload_parts(server_stream: tuple[bytes, bytes],
                                                    part_size: int) -> None:
    streamed, whole = server_stream
    runtime = FakeStreamingRuntime([{"PayloadPart": {"Bytes": chunk}}
                                    for chunk in split_every(streamed, part_size)])
    client = EndpointClient(endpoint_name="genkiln-dev", runtime_client=runtime)
    events = list(client.stream(PAYLOAD["inputs"], **PAYLOAD["parameters"]))
    assert events[-1]["generated_text"] == json.loads(whole)[0]["generated_text"]
    assert "".join(e["token"]["text"] for e in events) == events[-1]["generated_text"]
    [call] = runtime.calls
    assert call["EndpointName"] == "genkiln-dev" and call["Accept"] == "application/jsonlines"
    assert json.loads(call["Body"]) == PAYLOAD


def test_sagemaker_stream_errors_are_raised(server_stream: tuple[bytes, bytes]) -> None:
    streamed, _ = server_stream
    runtime = FakeStreamingRuntime([
        {"PayloadPart": {"Bytes": streamed[:10]}},
        {"ModelStreamError": {"ErrorCode": "ModelError", "Message": "container died"}},
    ])
    client = EndpointClient(endpoint_name="e", runtime_client=runtime)
    with pytest.raises(EndpointError, match="model stream error ModelError: container died"):
        list(client.stream("x"))


@mock_aws
def test_sagemaker_invoke_through_moto(server_stream: tuple[bytes, bytes]) -> None:
    _, whole = server_stream
    # Queue the real server's answer as the endpoint's response in moto.
    requests.post("http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
                  json={"region": "eu-west-1", "results": [
                      {"Body": whole.decode(), "ContentType": "application/json"}]},
                  timeout=5)
    runtime = boto3.client("sagemaker-runtime", region_name="eu-west-1")
    client = EndpointClient(endpoint_name="genkiln-dev", runtime_client=runtime)
    result = client.generate(PAYLOAD["inputs"], **PAYLOAD["parameters"])
    assert result == json.loads(whole)

    # What reached "AWS": moto keys each result by the request it answered.
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    backend = sagemakerruntime_backends["123456789012"]["eu-west-1"]
    # (moto 5 files it under endpoint None: it looks for the name in the body, while
    # boto3 sends it in the URL path; the request itself is what matters here.)
    [recorded] = [key for results in backend.results.values() for key in results]
    request = json.loads(base64.b64decode(recorded))
    assert request["Accept"] == "application/json"
    assert json.loads(request["Body"]) == {**PAYLOAD, "stream": False}


def test_http_errors_carry_the_servers_message(tiny_artifact: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(tiny_artifact)) as c:
        wait_ready(c)

        def post(url: str, **kwargs: Any) -> Any:
            return c.post("/invocations", content=kwargs["content"], headers=kwargs["headers"])

        monkeypatch.setattr("genkiln.client.httpx.post", post)
        client = EndpointClient(url="http://testserver")
        with pytest.raises(EndpointError) as info:
            client.generate("x", max_new_tokens=10_000)
    assert info.value.status == 422
    assert "must fit this model's context" in str(info.value)


def test_client_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        EndpointClient()
    with pytest.raises(ValueError, match="exactly one"):
        EndpointClient(url="http://x", endpoint_name="y")


