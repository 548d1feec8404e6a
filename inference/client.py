"""A client for genkiln endpoints: a local URL, or a SageMaker endpoint through boto3.

    client = EndpointClient(url="http://localhost:8080")
    client = EndpointClient(endpoint_name="genkiln-dev")        # boto3 sagemaker-runtime
    client.generate("Return the", max_new_tokens=20, seed=1)     # [{"generated_text": ...}]
    for event in client.stream("Return the", max_new_tokens=20):
        print(event["token"]["text"], end="")
    client.feedback(chosen=second["generation_id"], rejected=first["generation_id"])
    client.info()                                                # family, request hints

Every generation's answer carries its `generation_id` (and the seed and parameters that
produced it); `feedback()` records a rating of one or a preference between two.

Streams arrive as chunks that need not end on a line: `InvokeEndpointWithResponseStream`
forwards the server's chunks as `PayloadPart` events of arbitrary size, so lines are
reassembled here before they are parsed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

JSON = "application/json"
JSON_LINES = "application/jsonlines"
#: The header InvokeEndpoint's InferenceId becomes; the server takes it as the generation id.
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"


class EndpointError(RuntimeError):
    """The endpoint answered with an error; ``status`` and ``body`` say which."""

    def __init__(self, message: str, *, status: int | None = None,
                 body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class LineBuffer:
    """Reassemble newline-delimited records from chunks split at arbitrary bytes."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        return [line for line in lines if line.strip()]

    def flush(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest.strip() else []


def parse_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """JSON events from a chunked stream of JSON lines (or `data:` server-sent events)."""
    buffer = LineBuffer()

    def decode(line: bytes) -> dict[str, Any]:
        text = line.decode("utf-8").strip()
        if text.startswith("data:"):
            text = text[len("data:"):].strip()
        event = json.loads(text)
        if isinstance(event, dict) and "error" in event and "token" not in event:
            raise EndpointError(f"the endpoint stopped the stream: {event['error']}",
                                body=event)
        return event

    for chunk in chunks:
        for line in buffer.feed(chunk):
            yield decode(line)
    for line in buffer.flush():
        yield decode(line)


class EndpointClient:
    """Talk to a genkiln server by URL, or to a SageMaker endpoint by name."""

    def __init__(
        self,
        *,
        url: str | None = None,
        endpoint_name: str | None = None,
        runtime_client: Any = None,
        region_name: str | None = None,
        timeout: float = 65.0,
    ) -> None:
        if (url is None) == (endpoint_name is None):
            raise ValueError("give exactly one of url= (a local server) or endpoint_name=")
        self.url = url.rstrip("/") if url else None
        self.endpoint_name = endpoint_name
        self.timeout = timeout
        self._runtime = runtime_client
        if endpoint_name is not None and runtime_client is None:
            import boto3  # only the SageMaker path needs AWS credentials and boto3

            self._runtime = boto3.client("sagemaker-runtime", region_name=region_name)

    # --- the request shapes ------------------------------------------------------
    @staticmethod
    def _payload(inputs: str | list[str], parameters: dict[str, Any],
                 stream: bool) -> dict[str, Any]:
        return {"inputs": inputs, "parameters": parameters, "stream": stream}

    def generate(self, inputs: str | list[str], **parameters: Any) -> list[dict[str, Any]]:
        """Generate without streaming: TGI's `[{"generated_text": ...}]`."""
        result: list[dict[str, Any]] = self.invoke(self._payload(inputs, parameters, False))
        return result

    def stream(self, inputs: str, **parameters: Any) -> Iterator[dict[str, Any]]:
        """Generate with streaming: one event per token, the last with `generated_text`."""
        return self.invoke_stream(self._payload(inputs, parameters, True))

    def feedback(self, *, generation_id: str | None = None, rating: int | None = None,
                 chosen: str | None = None, rejected: str | None = None,
                 comment: str | None = None, feedback_id: str | None = None
                 ) -> dict[str, Any]:
        """Record a rating (1-5) of a generation, or a preference of `chosen` over
        `rejected`; the same feedback_id (or, without one, the same judgement) is stored
        once however often it is sent."""
        given = {"feedback_id": feedback_id, "generation_id": generation_id,
                 "rating": rating, "chosen": chosen, "rejected": rejected, "comment": comment}
        result: dict[str, Any] = self.invoke(
            {"feedback": {k: v for k, v in given.items() if v is not None}})
        return result

    def info(self) -> dict[str, Any]:
        """The served model: family, modality, and how the playground should ask it."""
        if self.url is not None:
            response = httpx.get(f"{self.url}/info", timeout=self.timeout)
            if response.status_code >= 400:
                raise _http_error(response.status_code, response.content)
            answer: dict[str, Any] = response.json()
            return answer
        answer = self.invoke({"info": {}})  # an endpoint passes only /invocations on
        return answer

    # --- transport ---------------------------------------------------------------
    def ping(self) -> bool:
        if self.url is None:
            raise ValueError("ping needs a url; SageMaker pings its endpoints itself")
        try:
            return httpx.get(f"{self.url}/ping", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    def _id_header(inference_id: str | None) -> dict[str, str]:
        return {} if inference_id is None else {INFERENCE_ID: inference_id}

    @staticmethod
    def _id_argument(inference_id: str | None) -> dict[str, str]:
        return {} if inference_id is None else {"InferenceId": inference_id}

    def invoke(self, payload: Any, *, inference_id: str | None = None) -> Any:
        """One request, one JSON answer. `inference_id` becomes the generation's id."""
        body = json.dumps(payload).encode()
        if self.url is not None:
            response = httpx.post(f"{self.url}/invocations", content=body, timeout=self.timeout,
                                  headers={"Content-Type": JSON, "Accept": JSON,
                                           **self._id_header(inference_id)})
            if response.status_code >= 400:
                raise _http_error(response.status_code, response.content)
            return response.json()
        try:
            answer = self._runtime.invoke_endpoint(
                EndpointName=self.endpoint_name, Body=body, ContentType=JSON, Accept=JSON,
                **self._id_argument(inference_id))
        except Exception as exc:  # botocore's ModelError carries the container's answer
            raise _aws_error(exc) from exc
        return json.loads(answer["Body"].read())

    def invoke_stream(self, payload: Any, *, inference_id: str | None = None
                      ) -> Iterator[dict[str, Any]]:
        body = json.dumps(payload).encode()
        if self.url is not None:
            return self._http_stream(body, inference_id)
        return parse_events(self._aws_chunks(body, inference_id))

    def _http_stream(self, body: bytes, inference_id: str | None = None
                     ) -> Iterator[dict[str, Any]]:
        with httpx.stream("POST", f"{self.url}/invocations", content=body, timeout=self.timeout,
                          headers={"Content-Type": JSON, "Accept": JSON_LINES,
                                   **self._id_header(inference_id)}) as response:
            if response.status_code >= 400:
                raise _http_error(response.status_code, response.read())
            yield from parse_events(response.iter_bytes())

    def _aws_chunks(self, body: bytes, inference_id: str | None = None) -> Iterator[bytes]:
        try:
            answer = self._runtime.invoke_endpoint_with_response_stream(
                EndpointName=self.endpoint_name, Body=body, ContentType=JSON, Accept=JSON_LINES,
                **self._id_argument(inference_id))
        except Exception as exc:
            raise _aws_error(exc) from exc
        for event in answer["Body"]:
            if "PayloadPart" in event:
                yield event["PayloadPart"]["Bytes"]
            elif "ModelStreamError" in event:
                error = event["ModelStreamError"]
                raise EndpointError(f"model stream error {error.get('ErrorCode')}: "
                                    f"{error.get('Message')}", body=error)
            elif "InternalStreamFailure" in event:
                raise EndpointError("SageMaker reported an internal stream failure: "
                                    f"{event['InternalStreamFailure'].get('Message')}",
                                    body=event["InternalStreamFailure"])


def _http_error(status: int, content: bytes) -> EndpointError:
    try:
        body = json.loads(content)
        message = body.get("error", content.decode(errors="replace"))
    except (json.JSONDecodeError, AttributeError):
        body, message = content, content.decode(errors="replace")
    return EndpointError(f"HTTP {status}: {message}", status=status, body=body)


def _aws_error(exc: Exception) -> EndpointError:
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    status = response.get("OriginalStatusCode") or response.get(
        "ResponseMetadata", {}).get("HTTPStatusCode")
    message = response.get("OriginalMessage") or error.get("Message") or str(exc)
    try:
        body = json.loads(message)
        message = body.get("error", message)
    except (json.JSONDecodeError, TypeError, AttributeError):
        body = message
    return EndpointError(f"SageMaker endpoint error ({error.get('Code', type(exc).__name__)}"
                         f"{', HTTP ' + str(status) if status else ''}): {message}",
                         status=status, body=body)
