"""Serving the autoencoder: `encode` to the latent code, `score` for anomalies."""

from __future__ import annotations

from typing import Any, Literal

import torch

from inference.handlers.image import Decoded, ImageHandler, Kind, OneImageRequest
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.autoencoder import from_artifact


class EncodeRequest(OneImageRequest):
    kind: Literal["encode"] = "encode"


class ScoreRequest(OneImageRequest):
    kind: Literal["score"] = "score"


class AutoencoderHandler(ImageHandler):
    family = "autoencoder"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        loaded = from_artifact(artifact, device)
        super().__init__(loaded.spec, device, {
            "encode": Kind(EncodeRequest, self.encode, self.encode_batch),
            "score": Kind(ScoreRequest, self.score, self.score_batch)})
        self.model = loaded.model
        self.threshold = loaded.threshold
        self.percentile = loaded.percentile

    def encode(self, decoded: Decoded, generator: torch.Generator) -> dict[str, Any]:
        (x,) = decoded.images
        return {"latent": [round(float(v), 6) for v in self.model.encode(x)[0]]}

    def score(self, decoded: Decoded, generator: torch.Generator) -> dict[str, Any]:
        (x,) = decoded.images
        error = float(self.model.reconstruction_error(x)[0])
        return {"reconstruction_error": error, "threshold": self.threshold,
                "threshold_percentile": self.percentile, "anomaly": error > self.threshold}

    def encode_batch(self, group: list[Decoded], generators: list[torch.Generator]
                     ) -> list[dict[str, Any]]:
        codes = self.model.encode(torch.cat([d.images[0] for d in group]))  # (B, latent)
        return [{"latent": [round(float(v), 6) for v in code]} for code in codes]

    def score_batch(self, group: list[Decoded], generators: list[torch.Generator]
                    ) -> list[dict[str, Any]]:
        errors = self.model.reconstruction_error(torch.cat([d.images[0] for d in group]))
        return [{"reconstruction_error": float(e), "threshold": self.threshold,
                 "threshold_percentile": self.percentile, "anomaly": float(e) > self.threshold}
                for e in errors]
