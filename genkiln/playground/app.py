"""`genkiln playground`: a page to generate, regenerate and judge, in front of an endpoint.

The browser talks only to this small app; the app talks to the model through
`EndpointClient`, so the same page works with a local server URL and with a SageMaker
endpoint (whose AWS credentials stay here, never in the browser).

    GET  /               the page (static HTML, JS and CSS from ./static, no build step)
    GET  /api/info       the served model and how to ask it (the server's /info)
    POST /api/generate   {"prompt"?, "midi_base64"?, "track"?, "seed"?, "request"?} -> JSON lines:
                         {"type": "token", "text"} ... then {"type": "done",
                         "generation_id", "seed", "output", "answer"} or {"type": "error"}
    POST /api/feedback   {"generation_id", "rating"} or {"chosen", "rejected"}, "comment"?
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from genkiln.client import EndpointClient, EndpointError
from inference.capture import output_of

log = logging.getLogger("genkiln.playground")
STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 6 * 1024 * 1024


def build_payload(hints: dict[str, Any], *, prompt: str | None, midi_base64: str | None,
                  seed: int | None, template: dict[str, Any] | None = None,
                  track: str | dict[str, Any] | None = None) -> dict[str, Any]:
    """The endpoint request for what the person gave, in the shape /info describes."""
    payload = copy.deepcopy(template if template is not None else hints.get("template", {}))
    kind = hints.get("input", "none")
    field = hints.get("input_field")
    if kind == "text":
        payload[field or "inputs"] = prompt or ""
    elif kind == "midi" and midi_base64:
        payload[field or "primer_midi"] = midi_base64
    elif kind == "track":  # a track's name, or an uploaded track (width and waypoints)
        chosen = track or payload.get(field or "track") or next(iter(hints.get("tracks", [])),
                                                                 None)
        if chosen is not None:
            payload[field or "track"] = chosen
    if hints.get("stream"):
        payload["stream"] = True
    if seed is not None:
        if "inputs" in payload:  # TGI keeps the seed among the parameters
            payload.setdefault("parameters", {})["seed"] = seed
        else:
            payload["seed"] = seed
    return payload


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


def _done(answer: Any) -> dict[str, Any]:
    item = answer[0] if isinstance(answer, list) and answer else answer
    if not isinstance(item, dict):
        return {"type": "done", "generation_id": None, "seed": None,
                "output": {"json": answer}, "answer": answer}
    return {"type": "done", "generation_id": item.get("generation_id"),
            "seed": item.get("seed"), "output": output_of(item), "answer": item}


def create_playground(client: EndpointClient) -> FastAPI:
    app = FastAPI(title="genkiln playground", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    hints_cache: dict[str, Any] = {}

    def info() -> dict[str, Any]:
        if not hints_cache:
            hints_cache.update(client.info())
        return hints_cache

    @app.get("/")
    def page() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info")
    def api_info() -> Response:
        try:
            return JSONResponse(info())
        except EndpointError as exc:
            log.warning("the model is not reachable: %s", exc)
            return JSONResponse({"error": f"the model is not reachable: {exc}"},
                                status_code=502)

    async def _json_body(request: Request) -> dict[str, Any]:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("the request is over 6 MB; upload a smaller file")
        try:
            data = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"the body is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("send a JSON object")
        return data

    @app.post("/api/generate")
    async def generate(request: Request) -> Response:
        try:
            data = await _json_body(request)
            seed = data.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                                     or seed < 0):
                raise ValueError("seed must be a whole number of at least 0")
            template = data.get("request")
            if template is not None and not isinstance(template, dict):
                raise ValueError("request must be a JSON object (the request template)")
            track = data.get("track")
            if track is not None and not isinstance(track, str | dict):
                raise ValueError("track must be a track's name or a track (JSON object)")
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            hints = info().get("playground", {})
        except EndpointError as exc:
            log.warning("the model is not reachable: %s", exc)
            return JSONResponse({"error": f"the model is not reachable: {exc}"},
                                status_code=502)
        payload = build_payload(hints, prompt=data.get("prompt"),
                                midi_base64=data.get("midi_base64"), seed=seed,
                                template=template, track=track)
        return StreamingResponse(_events(client, payload), media_type="application/jsonlines")

    @app.post("/api/feedback")
    async def feedback(request: Request) -> Response:
        try:
            data = await _json_body(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            answer = client.invoke({"feedback": data})
        except EndpointError as exc:
            status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 500 \
                else 502
            message = exc.body.get("error", str(exc)) if isinstance(exc.body, dict) \
                else str(exc)
            log.warning("feedback: %s", message)
            return JSONResponse({"error": message}, status_code=status)
        return JSONResponse(answer)

    return app


def _events(client: EndpointClient, payload: dict[str, Any]) -> Iterator[bytes]:
    """Run in a worker thread by Starlette: the client is synchronous."""
    try:
        if payload.get("stream"):
            for event in client.invoke_stream(payload):
                if event.get("event") == "preview":  # an image family's picture developing
                    yield _line({"type": "preview", "images": event.get("images", []),
                                 "step": event.get("step"), "steps": event.get("steps")})
                    continue
                if event.get("event") == "final":
                    yield _line(_done(event))
                    return
                if event.get("generated_text") is not None:
                    token = event.get("token", {})
                    if token.get("text"):
                        yield _line({"type": "token", "text": token["text"]})
                    yield _line(_done(event))
                    return
                token = event.get("token") or {}
                yield _line({"type": "token", "text": token.get("text", "")})
            yield _line({"type": "error", "error": "the stream ended without a final event"})
        else:
            yield _line(_done(client.invoke(payload)))
    except EndpointError as exc:
        message = exc.body.get("error", str(exc)) if isinstance(exc.body, dict) else str(exc)
        log.warning("generation: %s", message)
        yield _line({"type": "error", "error": message})
    except Exception:
        log.exception("playground generation failed")
        yield _line({"type": "error", "error": "the playground could not reach the model; "
                                               "its log has the details"})



def run_playground(client: EndpointClient, *, host: str = "127.0.0.1", port: int = 8000
                   ) -> None:
    import uvicorn

    print(f"genkiln playground on http://{host}:{port}/", flush=True)
    uvicorn.run(create_playground(client), host=host, port=port, log_level="warning")
