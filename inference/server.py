"""The model server: SageMaker's `/ping` and `/invocations` on port 8080, as an ASGI app.

The model loads in a background thread so the port accepts connections at once (SageMaker
wants them within 250 ms); `/ping` answers 503 until the model is ready and 200 after.
Requests run off the event loop, so pings stay fast while they are served: the server
decodes and validates a request, then hands it to the scheduler (inference.scheduler),
which admits it or answers 429, batches it with others (continuous batching for text,
micro-batching for images) and cuts it at its deadline. Around it, `inference.capture`
names every generation and records it in the feedback store, and `/invocations` also
takes judgements of them (`{"feedback": ...}`). Every failure reaches the client as a
JSON error that says what to change, or as a generic 500 whose details stay in the
server log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from inference import capture
from inference.errors import ClientError
from inference.feedback_store import FeedbackStore, store_from_environment
from inference.handlers import Binary, Handler, load_handler
from inference.playground.hints import playground_hints
from inference.scheduler import Scheduler
from inference.schema import SCHEMA_VERSION
from inference.settings import ServingSettings
from inference.threads import fit_threads, one_model_per_process
from training import environment as env
from training.artifact import ArtifactError, load_artifact

log = logging.getLogger("genkiln.serve")

#: SageMaker real-time endpoints carry request bodies up to 6 MB.
MAX_REQUEST_BYTES = 6 * 1024 * 1024
DEFAULT_PORT = 8080
#: Under SageMaker's 30 s between SIGTERM and SIGKILL, so in-flight work finishes cleanly.
GRACEFUL_SHUTDOWN_SECONDS = 20

JSON_LINES = "application/jsonlines"
EVENT_STREAM = "text/event-stream"


@dataclass
class ModelState:
    """What the server knows about its model: loading, ready, or failed (and why)."""

    model_dir: Path
    device: str
    settings: ServingSettings = field(default_factory=ServingSettings)
    handler: Handler | None = None
    scheduler: Scheduler | None = None
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def load(self) -> None:
        try:
            artifact = load_artifact(self.model_dir)
            handler = load_handler(artifact, self.device)
            fit_threads(handler.probe)
            self.scheduler = Scheduler(handler, self.settings)
            self.handler = handler
            log.info("model ready: %s from %s on %s", artifact.family, self.model_dir,
                     self.device)
        except ArtifactError as exc:
            self.error = str(exc)
            log.error("model failed to load: %s", exc)
        except Exception as exc:
            self.error = "the model failed to load; the server log has the details"
            log.exception("model failed to load: %s", exc)
        finally:
            self.ready.set()


def _error(exc: ClientError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    too_large = ClientError(
        f"request body exceeds {limit:,} bytes (SageMaker real-time endpoints take at most "
        f"6 MB): send fewer or shorter inputs, or use an asynchronous endpoint",
        status=413, error_type="validation")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes, content_type: str | None) -> Any:
    kind = (content_type or "application/json").split(";")[0].strip().lower()
    if kind not in ("application/json", "text/plain", "*/*", ""):
        raise ClientError(f"Content-Type {kind} is not supported; send application/json",
                          status=415)
    if kind == "text/plain":
        return body.decode("utf-8", errors="replace")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClientError(f"body is not valid JSON ({exc}); send a JSON object such as "
                          f'{{"inputs": "Once upon a time"}}', status=400) from None


def _framing(accept: str | None) -> tuple[str, str, str]:
    """Media type, line prefix and line end of a stream: JSON lines, or server-sent events."""
    if accept and EVENT_STREAM in accept:
        return EVENT_STREAM, "data:", "\n\n"
    return JSON_LINES, "", "\n"


_FROM_ENVIRONMENT: Any = object()


def _record(store: FeedbackStore, records: list[Any]) -> None:
    """Keep generation records; a store that fails costs the record, not the answer."""
    for record in records:
        try:
            store.put(record)
        except Exception:
            log.exception("could not record generation %s in %s", record.generation_id, store)


def create_app(model_dir: Path, *, device: str = "cpu",
               max_request_bytes: int | None = None,
               settings: ServingSettings | None = None,
               feedback_store: FeedbackStore | None = _FROM_ENVIRONMENT) -> FastAPI:
    limit = max_request_bytes or int(os.environ.get(env.GENKILN_MAX_REQUEST_BYTES,
                                                    MAX_REQUEST_BYTES))
    # One model per process; the settings come from the environment unless given.
    state = ModelState(model_dir=Path(model_dir), device=device,
                       settings=settings or ServingSettings.from_env())
    # Records are written beside generation, never in its way.
    store = store_from_environment() if feedback_store is _FROM_ENVIRONMENT else feedback_store
    recorder = ThreadPoolExecutor(max_workers=4, thread_name_prefix="genkiln-feedback")
    log.info("feedback store: %s", store if store is not None else "off")

    async def keep(records: list[Any]) -> None:
        """Record generations on the recorder's threads; nothing to do with capture off."""
        if store is not None:
            await asyncio.get_running_loop().run_in_executor(recorder, _record, store, records)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=state.load, name="genkiln-load", daemon=True)
        loader.start()
        yield
        if state.scheduler is not None:
            state.scheduler.close()
        recorder.shutdown(wait=True)

    app = FastAPI(title="genkiln", version=SCHEMA_VERSION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.model = state

    @app.get("/ping")
    async def ping() -> Response:
        if state.handler is not None:
            return JSONResponse({"status": "ready", "family": state.handler.family})
        if state.error is not None:
            return JSONResponse({"status": "failed", "error": state.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    def describe() -> Response:
        if state.handler is None:
            return JSONResponse({"status": "loading" if state.error is None else "failed"},
                                status_code=503)
        manifest = load_artifact(state.model_dir).manifest
        return JSONResponse({
            "schema_version": SCHEMA_VERSION,
            "family": manifest["family"],
            "modality": manifest["modality"],
            "format_version": manifest["format_version"],
            "model_args": manifest["model_args"],
            "metrics": manifest.get("metrics", {}),
            "feedback": {"enabled": store is not None},
            "playground": playground_hints(state.handler, manifest["modality"]),
        })

    @app.get("/info")
    async def info() -> Response:
        return describe()

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        # Feedback and info need no model; generation waits for it.
        handler, scheduler = state.handler, state.scheduler
        try:
            body = await _read_body(request, limit)
            payload = _parse_json(body, request.headers.get("content-type"))
            loop = asyncio.get_running_loop()
            if capture.is_feedback(payload):
                judged = await loop.run_in_executor(recorder, capture.accept_feedback,
                                                    store, payload)
                return JSONResponse(judged)
            if capture.is_info(payload):  # /info for callers that reach only /invocations
                return describe()
            if handler is None or scheduler is None:
                return _error(ClientError("the model is not loaded yet; retry when /ping is "
                                          "200", status=503, error_type="overloaded"))
            pending = capture.begin(
                handler.family, payload, request.headers,
                default_kind=next(iter(getattr(handler, "kinds", {})), None),
                text=hasattr(handler, "tokenizer"))
            decoded = handler.decode(pending.payload, request.headers.get("accept"))
            if handler.wants_stream(decoded):
                return await _stream(scheduler, decoded, request.headers.get("accept"),
                                     pending, keep)
            result = await scheduler.predict(decoded)
            if isinstance(result, Binary):
                pending.finish(result.body, result.media_type)
                answer: Response = Response(result.body, media_type=result.media_type,
                                            headers=pending.headers())
            else:
                answer = JSONResponse(pending.finish(result), headers=pending.headers())
            await keep(pending.records)
            return answer
        except ClientError as exc:
            return _error(exc)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("invocation failed (incident %s)", incident)
            return JSONResponse(
                {"error": f"internal error while generating (incident {incident}); the "
                          f"server log has the details", "error_type": "generation"},
                status_code=500)

    return app


async def _stream(scheduler: Scheduler, request: Any, accept: str | None,
                  pending: capture.Pending,
                  record: Callable[[list[Any]], Awaitable[None]]) -> StreamingResponse:
    """A chunked stream of the scheduler's events. The first event is awaited here, so a
    request refused before it starts (429, a deadline) still gets its status code. The
    final event names the generation, which is recorded before the caller sees it."""
    media_type, prefix, end = _framing(accept)
    events = scheduler.stream(request)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await events.aclose()
        raise

    def line(event: Any) -> bytes:
        return (prefix + json.dumps(event, separators=(",", ":")) + end).encode()

    async def finished(event: Any) -> Any:
        event = pending.finish_event(event)
        if pending.records:  # the final event
            records, pending.records = pending.records, []
            await record(records)
        return event

    async def lines() -> AsyncIterator[bytes]:
        try:
            if first is None:
                return
            yield line(await finished(first))
            async for event in events:
                yield line(await finished(event))
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("streamed generation failed (incident %s)", incident)
            yield line({"error": f"internal error while generating (incident {incident})",
                        "error_type": "generation"})
        finally:
            await events.aclose()  # the client went away, or the stream ended

    return StreamingResponse(lines(), media_type=media_type, headers=pending.headers())


def pick_device(choice: str = "auto") -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def serve(model_dir: Path, *, host: str = "0.0.0.0", port: int | None = None,
          device: str = "auto") -> None:
    """Run the server until SIGTERM or Ctrl-C; uvicorn drains in-flight requests first."""
    level = os.environ.get(env.GENKILN_LOG_LEVEL, "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = port or int(os.environ.get(env.SAGEMAKER_BIND_TO_PORT, DEFAULT_PORT))
    one_model_per_process()
    app = create_app(model_dir, device=pick_device(device))
    config = uvicorn.Config(app, host=host, port=port, log_level=level.lower(),
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                            access_log=False)
    uvicorn.Server(config).run()
