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

A request over SageMaker's 6 MB real-time limit, or one the caller marks `long=True`, goes
to the stage's asynchronous endpoint instead, with the same call: its body is uploaded
under `async-requests/` of the capture bucket, `InvokeEndpointAsync` queues it, and the
answer is polled from the output location SageMaker names (`EndpointClient.from_outputs`
reads both endpoints and the bucket from `cdk-outputs.json`).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

JSON = "application/json"
JSON_LINES = "application/jsonlines"
#: SageMaker real-time endpoints take request bodies up to this; a larger one goes async.
REALTIME_LIMIT = 6 * 1024 * 1024
#: Where async request bodies go in the capture bucket (infra/layout.py's ASYNC_REQUESTS).
ASYNC_REQUESTS = "async-requests/"
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
        async_endpoint_name: str | None = None,
        async_bucket: str | None = None,
        s3_client: Any = None,
        poll_seconds: float = 5.0,
        async_timeout: float = 3600.0,
    ) -> None:
        if (url is None) == (endpoint_name is None):
            raise ValueError("give exactly one of url= (a local server) or endpoint_name=")
        self.url = url.rstrip("/") if url else None
        self.endpoint_name = endpoint_name
        self.timeout = timeout
        self.async_endpoint_name, self.async_bucket = async_endpoint_name, async_bucket
        self.poll_seconds, self.async_timeout = poll_seconds, async_timeout
        self._runtime, self._s3 = runtime_client, s3_client
        if endpoint_name is not None:
            import boto3  # only the SageMaker path needs AWS credentials and boto3

            if runtime_client is None:
                self._runtime = boto3.client("sagemaker-runtime", region_name=region_name)
            if s3_client is None and async_endpoint_name:
                self._s3 = boto3.client("s3", region_name=region_name)

    @classmethod
    def from_outputs(cls, path: str | Path = "cdk-outputs.json", *, stage: str = "dev",
                     project: str = "genkiln", **options: Any) -> EndpointClient:
        """The stage's endpoint (and its asynchronous one, when deployed) by
        `cdk deploy --outputs-file`."""
        from infra.outputs import load_outputs

        outputs = load_outputs(path, project=project, stage=stage)
        if "endpoint_name" not in outputs:
            raise ValueError(f"{path} names no endpoint for stage {stage}: deploy a model "
                             f"(-c genkiln:modelArtifact=... or genkiln:modelPackageArn=...)")
        return cls(endpoint_name=outputs["endpoint_name"],
                   async_endpoint_name=outputs.get("async_endpoint_name"),
                   async_bucket=outputs["capture_bucket"], **options)

    # --- the request shapes ------------------------------------------------------
    @staticmethod
    def _payload(inputs: str | list[str], parameters: dict[str, Any],
                 stream: bool) -> dict[str, Any]:
        return {"inputs": inputs, "parameters": parameters, "stream": stream}

    def generate(self, inputs: str | list[str], *, long: bool = False,
                 **parameters: Any) -> list[dict[str, Any]]:
        """Generate without streaming: TGI's `[{"generated_text": ...}]`. ``long``: through
        the asynchronous endpoint (as any request over 6 MB goes)."""
        result: list[dict[str, Any]] = self.invoke(self._payload(inputs, parameters, False),
                                                   long=long)
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
            with self._reaching():
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

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """A server that cannot be reached (down, wrong port, timed out) is one EndpointError
        that says so, not a transport traceback."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise EndpointError(f"{self.url} did not answer within {self.timeout:g} s "
                                f"({type(exc).__name__}); the server may be overloaded or "
                                f"still loading") from None
        except httpx.TransportError as exc:
            raise EndpointError(f"cannot reach {self.url} ({' '.join(str(exc).split())}): "
                                f"is the server running? Start one with `genkiln serve "
                                f"MODEL_DIR`, or pass --url/--endpoint") from None

    @staticmethod
    def _id_header(inference_id: str | None) -> dict[str, str]:
        return {} if inference_id is None else {INFERENCE_ID: inference_id}

    @staticmethod
    def _id_argument(inference_id: str | None) -> dict[str, str]:
        return {} if inference_id is None else {"InferenceId": inference_id}

    def invoke(self, payload: Any, *, inference_id: str | None = None,
               long: bool = False) -> Any:
        """One request, one JSON answer. `inference_id` becomes the generation's id. A
        body over 6 MB, or ``long``, goes through the asynchronous endpoint."""
        body = json.dumps(payload).encode()
        if self.endpoint_name is not None and (long or len(body) > REALTIME_LIMIT):
            return self._invoke_async(body, inference_id)
        if self.url is not None:
            with self._reaching():
                response = httpx.post(f"{self.url}/invocations", content=body,
                                      timeout=self.timeout,
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

    def _invoke_async(self, body: bytes, inference_id: str | None) -> Any:
        """Upload the body, queue it on the asynchronous endpoint, poll for the answer."""
        if not self.async_endpoint_name or not self.async_bucket:
            raise EndpointError(
                f"the request is {len(body):,} bytes, over SageMaker's 6 MB real-time limit "
                f"(or marked long), and no asynchronous endpoint is named: deploy one with "
                f"`-c genkiln:asyncEndpoint=true`, or pass async_endpoint_name= and "
                f"async_bucket=")
        key = f"{ASYNC_REQUESTS}{uuid.uuid4().hex}.json"
        self._s3.put_object(Bucket=self.async_bucket, Key=key, Body=body, ContentType=JSON)
        try:
            queued = self._runtime.invoke_endpoint_async(
                EndpointName=self.async_endpoint_name, ContentType=JSON, Accept=JSON,
                InputLocation=f"s3://{self.async_bucket}/{key}",
                **self._id_argument(inference_id))
        except Exception as exc:
            raise _aws_error(exc) from exc
        output, failure = queued["OutputLocation"], queued.get("FailureLocation")
        deadline = time.monotonic() + self.async_timeout
        while True:
            for location, failed in ((output, False), (failure, True)):
                data = self._read_s3(location) if location else None
                if data is not None and failed:
                    raise _http_error(424, data)
                if data is not None:
                    return json.loads(data)
            if time.monotonic() > deadline:
                raise EndpointError(f"no answer within {self.async_timeout:g} s; it may still "
                                    f"arrive at {output}")
            time.sleep(self.poll_seconds)

    def _read_s3(self, uri: str) -> bytes | None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            answer = self._s3.get_object(Bucket=bucket, Key=key)
        except self._s3.exceptions.NoSuchKey:
            return None
        data: bytes = answer["Body"].read()
        return data

    def invoke_stream(self, payload: Any, *, inference_id: str | None = None
                      ) -> Iterator[dict[str, Any]]:
        body = json.dumps(payload).encode()
        if self.url is not None:
            return self._http_stream(body, inference_id)
        return parse_events(self._aws_chunks(body, inference_id))

    def _http_stream(self, body: bytes, inference_id: str | None = None
                     ) -> Iterator[dict[str, Any]]:
        with self._reaching(), httpx.stream(
                "POST", f"{self.url}/invocations", content=body, timeout=self.timeout,
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
