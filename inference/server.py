"""The model server: SageMaker's `/ping` and `/invocations` on port 8080, as an ASGI app,
with text-generation-inference's and OpenAI's routes beside them.

    GET  /ping, /health           200 once the model is loaded (503 while loading, on a
                                  broken artifact, and while draining after SIGTERM)
    POST /invocations             everything: TGI generate, OpenAI chat (`messages`) and
                                  completions (`prompt`), a family's own kinds, feedback
                                  (`{"feedback": ...}`) and `{"info": {}}`
    POST /, /generate, /generate_stream, /v1/chat/completions, /v1/completions
                                  TGI's and OpenAI's own routes, for clients outside SageMaker
    GET  /info, /v1/models, /openapi.json

The model loads in a background thread so the port accepts connections at once (SageMaker
wants them within 250 ms). Reading a body is the event loop's only part of a request;
parsing, validating and tokenizing it run on intake threads (inference.intake,
inference.invocation), so pings stay fast whatever arrives. The scheduler
(inference.scheduler) admits a request or answers 429, batches it with others and cuts it
at its deadline. Around it, `inference.capture` names every generation and records it in
the feedback store. Every failure reaches the client as a JSON error that says what to
change, or as a generic 500 whose details stay in the server log. On SIGTERM the server
drains: new requests get 503, generations still running near the end of the grace
period end with an event that says why, and the process exits before SageMaker's SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import threading
import time
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
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException

from inference import capture, invocation
from inference.errors import ClientError
from inference.feedback_store import FeedbackStore, store_for
from inference.handlers import Binary, Handler, load_handler
from inference.intake import parse_body
from inference.invocation import Framing, Prepared, Route
from inference.openai_api import ChatRequest, CompletionRequest, model_list
from inference.scheduler import Scheduler
from inference.schema import (
    MAX_BEST_OF,
    MAX_STOP_SEQUENCES,
    SCHEMA_VERSION,
    ErrorResponse,
    FeedbackRequest,
    GenerateRequest,
    InfoRequest,
)
from inference.settings import ServingSettings
from inference.threads import fit_threads, one_model_per_process
from training.artifact import ArtifactError, artifact_sha256, load_artifact

log = logging.getLogger("genkiln.serve")

#: After a body this large, the allocator is asked to hand freed memory back to the OS.
LARGE_BODY = 1024 * 1024


class SafeJSON(JSONResponse):
    """A JSON answer as UTF-8; any string that cannot be (none should) goes escaped."""

    def render(self, content: Any) -> bytes:
        try:
            return invocation.dumps(content)
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode()


@dataclass
class ModelState:
    """What the server knows about its model: loading, ready, or failed (and why)."""

    model_dir: Path
    device: str
    settings: ServingSettings = field(default_factory=ServingSettings)
    handler: Handler | None = None
    scheduler: Scheduler | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    model_id: str = "genkiln"
    loaded_at: int = 0
    error: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    loop: asyncio.AbstractEventLoop | None = None

    def load(self) -> None:
        try:
            artifact = load_artifact(self.model_dir)
            handler = load_handler(artifact, self.device, self.settings)
            fit_threads(handler.probe, forced=self.settings.num_threads)
            self.scheduler = Scheduler(handler, self.settings)
            self.manifest = artifact.manifest
            self.model_id = self.settings.model_id or \
                f"genkiln-{artifact.family}-{artifact_sha256(artifact.directory)[:12]}"
            self.loaded_at = int(time.time())
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

    @property
    def draining(self) -> bool:
        return self.scheduler is not None and self.scheduler.draining

    def drain(self) -> None:
        """SIGTERM: refuse new work, cut what runs before the grace period ends. Safe to
        call from a signal handler: the work is handed to the event loop."""
        if self.scheduler is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.scheduler.drain, self.settings.drain_s)


def _error(exc: ClientError, route: Route = Route.INVOCATIONS) -> SafeJSON:
    openai = route in (Route.CHAT, Route.COMPLETION)
    return SafeJSON(exc.openai_body() if openai else exc.body(), status_code=exc.status)


def _internal_error(what: str) -> SafeJSON:
    incident = uuid.uuid4().hex[:12]
    log.exception("%s failed (incident %s)", what, incident)
    return SafeJSON({"error": f"internal error while {what} (incident {incident}); the "
                              f"server log has the details", "error_type": "generation"},
                    status_code=500)


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


def release_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc keeps them otherwise), so a large
    request leaves the process no bigger than before it."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
    # One model per process; the settings come from the environment unless given.
    settings = settings or ServingSettings.from_env()
    limit = settings.max_request_bytes if max_request_bytes is None else max_request_bytes
    state = ModelState(model_dir=Path(model_dir), device=device, settings=settings)
    # Records are written beside generation, never in its way.
    store = store_for(settings.feedback) if feedback_store is _FROM_ENVIRONMENT \
        else feedback_store
    recorder = ThreadPoolExecutor(max_workers=4, thread_name_prefix="genkiln-feedback")
    # Bodies are taken apart here, off the event loop.
    intake = ThreadPoolExecutor(max_workers=2, thread_name_prefix="genkiln-intake")
    in_progress: set[str] = set()  # callers' inference ids being served (event loop only)
    log.info("feedback store: %s", store if store is not None else "off")

    async def keep(records: list[Any]) -> None:
        """Record generations on the recorder's threads; nothing to do with capture off."""
        if store is not None:
            await asyncio.get_running_loop().run_in_executor(recorder, _record, store, records)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        loader = threading.Thread(target=state.load, name="genkiln-load", daemon=True)
        loader.start()
        yield
        if state.scheduler is not None:
            state.scheduler.close()
        intake.shutdown(wait=False, cancel_futures=True)
        recorder.shutdown(wait=True)

    app = FastAPI(title="genkiln", version=SCHEMA_VERSION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.model = state

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        hint = {404: f"no route {request.url.path}; POST to /invocations",
                405: f"{request.method} is not allowed on {request.url.path}"}
        return SafeJSON({"error": hint.get(exc.status_code, str(exc.detail)),
                         "error_type": "validation"}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception) -> Response:
        return _internal_error(f"serving {request.url.path}")

    def health() -> Response:
        if state.draining:
            return SafeJSON({"status": "draining"}, status_code=503)
        if state.handler is not None:
            return SafeJSON({"status": "ready", "family": state.handler.family})
        if state.error is not None:
            return SafeJSON({"status": "failed", "error": state.error}, status_code=503)
        return SafeJSON({"status": "loading"}, status_code=503)

    async def ping() -> Response:
        return health()

    app.add_api_route("/ping", ping, methods=["GET"])
    app.add_api_route("/health", ping, methods=["GET"])

    def describe() -> Response:
        handler = state.handler
        if handler is None:
            return SafeJSON({"status": "loading" if state.error is None else "failed"},
                            status_code=503)
        manifest = state.manifest
        described = handler.describe()
        context = described.context_limit
        return SafeJSON({
            "schema_version": SCHEMA_VERSION,
            "family": manifest["family"],
            "modality": manifest["modality"],
            "format_version": manifest["format_version"],
            "model_args": manifest["model_args"],
            "metrics": manifest.get("metrics", {}),
            "feedback": {"enabled": store is not None},
            "kinds": list(described.kinds),
            "batching": str(handler.batching),
            "playground": described.playground,
            # One request this model answers 200: a deployment's smoke test sends it.
            "smoke_request": handler.smoke_request(),
            # text-generation-inference's /info fields, for its clients
            "model_id": state.model_id,
            "max_input_tokens": context - 1 if context else None,
            "max_total_tokens": context,
            "max_best_of": MAX_BEST_OF,
            "max_stop_sequences": MAX_STOP_SEQUENCES,
            "max_client_batch_size": state.settings.max_prompts,
            "max_concurrent_requests": state.settings.max_concurrent_requests,
            "router": "genkiln",
            "version": SCHEMA_VERSION,
        })

    async def info() -> Response:
        return describe()

    app.add_api_route("/info", info, methods=["GET"])

    @app.get("/v1/models")
    async def models() -> Response:
        if state.handler is None:
            return describe()
        return SafeJSON(model_list(state.model_id, state.loaded_at))

    async def handle(request: Request, route: Route) -> Response:
        loop = asyncio.get_running_loop()
        body = b""
        claimed: str | None = None
        try:
            body = await _read_body(request, limit)
            payload = await loop.run_in_executor(intake, parse_body, body,
                                                 request.headers.get("content-type"))
            if route == Route.INVOCATIONS and capture.is_feedback(payload):
                judged = await loop.run_in_executor(intake, capture.accept_feedback,
                                                    store, payload)
                return SafeJSON(judged)
            if route == Route.INVOCATIONS and capture.is_info(payload):
                return describe()  # /info for callers that reach only /invocations
            handler, scheduler = state.handler, state.scheduler
            if handler is None or scheduler is None:
                return _error(ClientError("the model is not loaded yet; retry when /ping is "
                                          "200", status=503, error_type="overloaded"))
            prepared = await loop.run_in_executor(
                intake, lambda: invocation.prepare(handler, payload, request.headers, route,
                                                   store=store, model_id=state.model_id))
            assert prepared.pending is not None
            if prepared.pending.given:
                claimed = prepared.pending.base
                if claimed in in_progress:
                    claimed = None
                    raise ClientError("a request with this X-Amzn-SageMaker-Inference-Id is "
                                      "being served; send a new id with each request",
                                      status=409)
                in_progress.add(claimed)
            if prepared.stream:
                response = await _stream(scheduler, prepared, keep,
                                         lambda: in_progress.discard(claimed or ""))
                claimed = None  # the stream lets go of it when it ends
                return response
            result = await scheduler.predict(prepared.decoded)
            if isinstance(result, Binary):
                prepared.pending.finish(result.body, result.media_type)
                answer: Response = Response(result.body, media_type=result.media_type,
                                            headers=prepared.headers())
            else:
                answer = SafeJSON(invocation.whole(prepared, result),
                                  headers=prepared.headers())
            await keep(prepared.pending.records)
            return answer
        except ClientError as exc:
            return _error(exc, route)
        except Exception:
            return _internal_error("generating")
        finally:
            if claimed is not None:
                in_progress.discard(claimed)
            if len(body) > LARGE_BODY:
                del body
                loop.run_in_executor(recorder, release_memory)

    for path, route in (("/invocations", Route.INVOCATIONS), ("/", Route.INVOCATIONS),
                        ("/generate", Route.GENERATE),
                        ("/generate_stream", Route.GENERATE_STREAM),
                        ("/v1/chat/completions", Route.CHAT),
                        ("/v1/completions", Route.COMPLETION)):
        async def endpoint(request: Request, route: Route = route) -> Response:
            return await handle(request, route)
        app.add_api_route(path, endpoint, methods=["POST"], name=f"post {path}")

    app.openapi = lambda: _openapi(app, state.handler)  # type: ignore[method-assign]
    return app


async def _stream(scheduler: Scheduler, prepared: Prepared,
                  record: Callable[[list[Any]], Awaitable[None]],
                  release: Callable[[], None]) -> Response:
    """A chunked stream of the scheduler's events. The first event is awaited here, so a
    request refused before it starts (429, a deadline) still gets its status code. The
    final event names the generation, which is recorded before the caller sees it."""
    pending = prepared.pending
    assert pending is not None
    framing = Framing(prepared)
    events = scheduler.stream(prepared.decoded)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None
    except BaseException:
        release()
        await events.aclose()
        raise

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
            yield framing.event(await finished(first))
            async for event in events:
                yield framing.event(await finished(event))
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("streamed generation failed (incident %s)", incident)
            yield framing.event({"error": f"internal error while generating (incident "
                                          f"{incident})", "error_type": "generation"})
        finally:
            release()
            await events.aclose()  # the client went away, or the stream ended
        yield framing.end()

    return StreamingResponse(lines(), media_type=framing.media_type,
                             headers=prepared.headers())


def _openapi(app: FastAPI, handler: Handler | None) -> dict[str, Any]:
    """The spec, with every request body /invocations takes (an API fuzzer works from it)."""
    if app.openapi_schema is not None and handler is not None:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes,
                       description="genkiln's model server: SageMaker's container contract, "
                                   "text-generation-inference's and OpenAI's routes")
    text_models: list[type[BaseModel]] = [GenerateRequest, ChatRequest, CompletionRequest]
    family = handler.request_models() if handler is not None else text_models
    everything: list[type[BaseModel]] = [*family, FeedbackRequest, InfoRequest, ErrorResponse]
    _, definitions = models_json_schema([(m, "validation") for m in everything],
                                        ref_template="#/components/schemas/{model}")
    spec.setdefault("components", {})["schemas"] = definitions.get("$defs", {})

    def body(*models: type[BaseModel]) -> dict[str, Any]:
        refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
        schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    errors = {str(code): {"description": why, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ErrorResponse"}}}} for code, why in (
        (400, "malformed body"), (404, "unknown generation"), (409, "conflict"),
        (413, "body too large"), (415, "unsupported media type"), (422, "invalid request"),
        (429, "overloaded"), (503, "not ready or draining"))}
    bodies = {"/invocations": body(*family, FeedbackRequest, InfoRequest),
              "/": body(*family, FeedbackRequest, InfoRequest),
              "/generate": body(GenerateRequest), "/generate_stream": body(GenerateRequest),
              "/v1/chat/completions": body(ChatRequest),
              "/v1/completions": body(CompletionRequest)}
    text = handler is None or GenerateRequest in family
    for path, request_body in bodies.items():
        operation = spec["paths"].get(path, {}).get("post")
        if operation is None:
            continue
        if not text and path not in ("/invocations", "/"):
            del spec["paths"][path]
            continue
        operation["requestBody"] = request_body
        operation["responses"].update(errors)
    if handler is not None:
        app.openapi_schema = spec
    return spec


def pick_device(choice: str = "auto") -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


class _DrainingServer(uvicorn.Server):
    """uvicorn, which on SIGTERM (or Ctrl-C) first tells the model to drain."""

    def __init__(self, config: uvicorn.Config, state: ModelState) -> None:
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            self.state.drain()
        super().handle_exit(sig, frame)


def serve(model_dir: Path, *, host: str = "0.0.0.0", port: int | None = None,
          device: str = "auto") -> None:
    """Run the server until SIGTERM or Ctrl-C; in-flight requests drain first."""
    settings = ServingSettings.from_env()  # read once, here
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    one_model_per_process()
    app = create_app(model_dir, device=pick_device(device), settings=settings)
    state: ModelState = app.state.model
    config = uvicorn.Config(app, host=host, port=port or settings.port,
                            log_level=settings.log_level,
                            timeout_graceful_shutdown=int(state.settings.shutdown_grace_s),
                            access_log=False)
    _DrainingServer(config, state).run()
