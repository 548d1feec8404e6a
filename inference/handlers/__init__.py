"""One handler per family: decode a request, run the model, encode the answer.

A handler is built from a verified artifact and offers:
    decode(payload, accept) -> a validated request (raises ClientError: a 4xx, before the
                               model runs); `accept` is the request's Accept header
    predict(request) -> a JSON-able response, or `Binary` (a PNG, a MIDI file) when the
                        request asked for that media type
    stream(request, cancelled) -> an iterator of JSON-able events; stops once `cancelled`
    probe() -> one representative request, run as the server loads, to time the intra-op
               thread count (inference.threads.fit_threads)
    request_models() -> the pydantic models of the request bodies it takes (for the
                        server's /openapi.json)
    smoke_request() -> one small request it must answer 200, which /info names and a
                       deployment's smoke test sends (the promotion workflow)
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from training.artifact import Artifact, ArtifactError

#: family -> "module:callable" building its handler from (artifact, device).
HANDLERS = {
    "transformer": "inference.handlers.transformer:TextGenerationHandler",
    "rnn": "inference.handlers.rnn:handler_for",  # music or text, by the artifact's data
    "gan": "inference.handlers.gan:GANHandler",
    "vae": "inference.handlers.vae:VAEHandler",
    "rbm": "inference.handlers.rbm:RBMHandler",
    "autoencoder": "inference.handlers.autoencoder:AutoencoderHandler",
    "musegan": "inference.handlers.musegan:MuseGANHandler",
}


@dataclass(frozen=True)
class Binary:
    """A non-JSON answer: the bytes and their media type (image/png, audio/midi)."""

    body: bytes
    media_type: str


class Handler(Protocol):
    family: str

    def decode(self, payload: Any, accept: str | None = None) -> Any: ...

    def predict(self, request: Any) -> Any: ...

    def wants_stream(self, request: Any) -> bool: ...

    def stream(self, request: Any, cancelled: threading.Event | None = None) -> Any: ...

    def probe(self) -> None: ...

    def request_models(self) -> list[type[BaseModel]]: ...

    def smoke_request(self) -> dict[str, Any]: ...


def load_handler(artifact: Artifact, device: str = "cpu") -> Handler:
    target = HANDLERS.get(artifact.family)
    if target is None:
        raise ArtifactError(
            f"{artifact.directory} holds a {artifact.family!r} model, which this server "
            f"cannot serve (it serves {', '.join(sorted(HANDLERS))})")
    module, _, name = target.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)(artifact, device)
    return handler
