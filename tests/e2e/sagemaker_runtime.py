"""A stand-in for the SageMaker runtime API in front of a real genkiln server, for the
clients that only speak to SageMaker (boto3, LangChain's SagemakerEndpoint, LiteLLM).

moto's sagemaker-runtime answers InvokeEndpoint with canned bodies and has no response
streaming, so the clients would never meet the server. This forwards what the runtime
forwards, the way the SageMaker documentation says it does:

    POST /endpoints/{name}/invocations                  InvokeEndpoint: body, Content-Type,
                                                        Accept, custom attributes and the
                                                        inference id go to /invocations; a
                                                        4xx/5xx from the model comes back
                                                        as a 424 ModelError
    POST /endpoints/{name}/invocations-response-stream  InvokeEndpointWithResponseStream:
                                                        the model's chunked answer framed as
                                                        `PayloadPart` events in the AWS
                                                        event-stream encoding (a failure
                                                        mid-stream as `ModelStreamError`)
    POST /endpoints/{name}/async-invocations            InvokeEndpointAsync (202): the body
                                                        read from InputLocation in S3, the
                                                        answer written under `async_output`
                                                        (or, failing, its failures folder)

The runtime forwards the container's chunks as it reads them; the server writes one
event per chunk, so a part never starts inside one event and ends inside the next. The
stand-in always writes the framed stream in wire chunks of arbitrary size (seeded, so a
failure replays): a client that assumes one message per read fails here as in AWS. With
`split_parts` it also cuts each event into parts at arbitrary places, as the service may
("some of the json objects may be split across PayloadPart events", AWS's streaming
guide): a client that assumes one whole line per part fails then. (LiteLLM's decoder
does: it strips `data:` from the start of each part, so it needs an event's first part
to hold the whole prefix.)
"""

from __future__ import annotations

import json
import random
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.e2e.servers import free_port

#: The request headers InvokeEndpoint carries to the container (others are dropped).
FORWARDED = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes",
             "x-amzn-sagemaker-inference-id")
EVENT_STREAM = "application/vnd.amazon.eventstream"


def _header(name: str, value: str) -> bytes:
    encoded = value.encode()
    return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(encoded)) \
        + encoded


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of the AWS event-stream encoding: a prelude (total and header lengths
    and their CRC-32), string headers, the payload, and the whole message's CRC-32."""
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    return event_message({":event-type": "PayloadPart", ":content-type":
                          "application/octet-stream", ":message-type": "event"}, data)


def model_stream_error(message: str, code: str = "ModelStreamError") -> bytes:
    body = json.dumps({"Message": message, "ErrorCode": code}).encode()
    return event_message({":exception-type": "ModelStreamError", ":content-type":
                          "application/json", ":message-type": "exception"}, body)


def _model_error(status: int, body: bytes) -> Response:
    """InvokeEndpoint's answer when the container answers 4xx/5xx: a 424 ModelError."""
    text = body.decode(errors="replace")
    kind = "client" if status < 500 else "server"
    error = {"ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL", "OriginalStatusCode": status,
             "OriginalMessage": text,
             "Message": f"Received {kind} error ({status}) from primary with message "
                        f"\"{text}\". See the endpoint's CloudWatch logs for more.",
             "LogStreamArn": "arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/"
                             "Endpoints/genkiln"}
    return Response(json.dumps(error), status_code=424, media_type="application/json",
                    headers={"x-amzn-ErrorType": "ModelError"})


class Runtime:
    """The stand-in's app and its random cuts (one generator per request, seeded)."""

    def __init__(self, model_url: str, *, seed: int = 0, split_parts: bool = True,
                 max_part: int = 24, async_output: str | None = None) -> None:
        self.model_url = model_url.rstrip("/")
        self.seed, self.max_part, self.split_parts = seed, max_part, split_parts
        self.async_output = async_output  # s3://bucket/prefix of asynchronous answers
        self.requests = 0
        self.app = Starlette(routes=[
            Route("/endpoints/{name}/async-invocations", self.invoke_async, methods=["POST"]),
            Route("/endpoints/{name}/invocations", self.invoke, methods=["POST"]),
            Route("/endpoints/{name}/invocations-response-stream", self.invoke_stream,
                  methods=["POST"]),
        ])

    def _forward(self, request: Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}

    async def invoke(self, request: Request) -> Response:
        body = await request.body()
        async with httpx.AsyncClient(timeout=70) as client:
            answer = await client.post(f"{self.model_url}/invocations", content=body,
                                       headers=self._forward(request))
        if answer.status_code >= 400:
            return _model_error(answer.status_code, answer.content)
        headers = {"x-amzn-invoked-production-variant": "AllTraffic"}
        for name in ("x-amzn-sagemaker-custom-attributes",):
            if name in answer.headers:
                headers[name] = answer.headers[name]
        return Response(answer.content, media_type=answer.headers.get("content-type"),
                        headers=headers)

    async def invoke_async(self, request: Request) -> Response:
        """Queue, run and answer at once (SageMaker would run it later): the client only
        learns the locations, and polls them."""
        import asyncio

        import boto3

        assert self.async_output, "the stand-in was started without async_output"
        s3 = boto3.client("s3", region_name="us-east-1")
        source = request.headers["x-amzn-sagemaker-inputlocation"]
        bucket, _, key = source.removeprefix("s3://").partition("/")
        body = await asyncio.to_thread(lambda: s3.get_object(Bucket=bucket, Key=key)[
            "Body"].read())
        headers = {"content-type": request.headers.get("x-amzn-sagemaker-content-type",
                                                       "application/json"),
                   "accept": request.headers.get("x-amzn-sagemaker-accept", "application/json")}
        if "x-amzn-sagemaker-inference-id" in request.headers:
            headers["x-amzn-sagemaker-inference-id"] = request.headers[
                "x-amzn-sagemaker-inference-id"]
        async with httpx.AsyncClient(timeout=70) as client:
            answer = await client.post(f"{self.model_url}/invocations", content=body,
                                       headers=headers)
        out_bucket, _, prefix = self.async_output.removeprefix("s3://").partition("/")
        name = f"{random.Random().getrandbits(64):016x}"
        output = f"{prefix.rstrip('/')}/responses/{name}.out"
        failure = f"{prefix.rstrip('/')}/failures/{name}-error.out"
        written = output if answer.status_code < 400 else failure
        await asyncio.to_thread(lambda: s3.put_object(Bucket=out_bucket, Key=written,
                                                      Body=answer.content))
        return Response(json.dumps({"InferenceId": name}), status_code=202,
                        media_type="application/json", headers={
                            "x-amzn-sagemaker-outputlocation": f"s3://{out_bucket}/{output}",
                            "x-amzn-sagemaker-failurelocation": f"s3://{out_bucket}/{failure}"})

    async def invoke_stream(self, request: Request) -> Response:
        body = await request.body()
        self.requests += 1
        cuts = random.Random(self.seed * 1_000_003 + self.requests)
        client = httpx.AsyncClient(timeout=70)
        upstream = await client.send(client.build_request(
            "POST", f"{self.model_url}/invocations", content=body,
            headers=self._forward(request)), stream=True)
        if upstream.status_code >= 400:
            content = await upstream.aread()
            await upstream.aclose()
            await client.aclose()
            return _model_error(upstream.status_code, content)

        end = b"\n\n" if "event-stream" in upstream.headers.get("content-type", "") \
            else b"\n"

        def parts(event: bytes) -> bytes:
            """One event as PayloadParts of arbitrary size: its lines split across them."""
            if not self.split_parts:
                return payload_part(event) if event else b""
            framed = b""
            while event:
                size = cuts.randint(1, self.max_part)
                framed += payload_part(event[:size])
                event = event[size:]
            return framed

        async def framed() -> AsyncIterator[bytes]:
            read, pending = b"", b""
            try:
                async for chunk in upstream.aiter_bytes():
                    read += chunk
                    *events, read = read.split(end)
                    pending += b"".join(parts(event + end) for event in events)
                    # Wire chunks of arbitrary size: messages split across reads.
                    while len(pending) > 64:
                        size = cuts.randint(1, 64)
                        yield pending[:size]
                        pending = pending[size:]
                pending += parts(read)
            except httpx.HTTPError as exc:
                pending += model_stream_error(f"the model's stream broke: {exc}")
            finally:
                await upstream.aclose()
                await client.aclose()
            if pending:
                yield pending

        return StreamingResponse(framed(), media_type=EVENT_STREAM, headers={
            "x-amzn-sagemaker-content-type": upstream.headers.get("content-type", ""),
            "x-amzn-invoked-production-variant": "AllTraffic"})


@contextmanager
def runtime_for(model_url: str, *, seed: int = 0, split_parts: bool = True,
                async_output: str | None = None) -> Iterator[str]:
    """Serve the stand-in on a free port in this process; its URL (boto3's endpoint_url)."""
    port = free_port()
    app = Runtime(model_url, seed=seed, split_parts=split_parts, async_output=async_output).app
    server = uvicorn.Server(uvicorn.Config(app,
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the runtime stand-in did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def runtime_client(url: str) -> object:
    """A real boto3 sagemaker-runtime client pointed at the stand-in."""
    import boto3

    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
