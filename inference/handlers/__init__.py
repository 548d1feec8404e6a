"""One handler per family: decode a request, run the model, encode the answer.

The contract every handler follows is declared in `inference.handlers.contract`; this
table names the handler of each family, built from (artifact, device).
"""

from __future__ import annotations

import importlib

from inference.handlers.contract import (
    Batching,
    Binary,
    ContinuousHandler,
    Description,
    Handler,
    MicroBatchHandler,
)
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact, ArtifactError

__all__ = ["HANDLERS", "Batching", "Binary", "ContinuousHandler", "Description", "Handler",
           "MicroBatchHandler", "load_handler"]

#: family -> "module:callable" building its handler from (artifact, device, settings).
HANDLERS = {
    "transformer": "inference.handlers.transformer:TextGenerationHandler",
    "rnn": "inference.handlers.rnn:handler_for",  # music or text, by the artifact's data
    "gan": "inference.handlers.gan:GANHandler",
    "vae": "inference.handlers.vae:VAEHandler",
    "rbm": "inference.handlers.rbm:RBMHandler",
    "autoencoder": "inference.handlers.autoencoder:AutoencoderHandler",
    "musegan": "inference.handlers.musegan:MuseGANHandler",
    "racer": "inference.handlers.racer:RacerHandler",
    "diffusion": "inference.handlers.diffusion:DiffusionHandler",
}


def load_handler(artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> Handler:
    target = HANDLERS.get(artifact.family)
    if target is None:
        raise ArtifactError(
            f"{artifact.directory} holds a {artifact.family!r} model, which this server "
            f"cannot serve (it serves {', '.join(sorted(HANDLERS))})")
    module, _, name = target.partition(":")
    handler = getattr(importlib.import_module(module), name)(artifact, device, settings)
    assert isinstance(handler, Handler), f"{target} built a {type(handler).__name__}"
    return handler
