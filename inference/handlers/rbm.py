"""Serving the RBM: `sample` with Gibbs chains, `features` (hidden-unit probabilities)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from inference.handlers.image import (
    Decoded,
    ImageHandler,
    ImageRequest,
    Kind,
    OneImageRequest,
)
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.rbm import from_artifact


class GibbsSampleRequest(ImageRequest):
    kind: Literal["sample"] = "sample"
    n: int = Field(1, ge=1, le=64, description="images to generate")
    gibbs_steps: int | None = Field(None, ge=1, le=10_000,
                                    description="Gibbs steps per chain (default: the model's)")


class FeaturesRequest(OneImageRequest):
    kind: Literal["features"] = "features"


class RBMHandler(ImageHandler):
    family = "rbm"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        loaded = from_artifact(artifact, device)
        super().__init__(loaded.spec, device, {
            "sample": Kind(GibbsSampleRequest, self.sample, images=True),
            "features": Kind(FeaturesRequest, self.features, self.features_batch)})
        self.model = loaded.model
        self.gibbs_steps = loaded.gibbs_steps

    def sample(self, decoded: Decoded, generator: torch.Generator
               ) -> tuple[torch.Tensor, dict[str, Any]]:
        assert isinstance(decoded.request, GibbsSampleRequest)
        steps = decoded.request.gibbs_steps or self.gibbs_steps
        return self.model.sample(decoded.request.n, steps, generator), {"gibbs_steps": steps}

    def features(self, decoded: Decoded, generator: torch.Generator) -> dict[str, Any]:
        (x,) = decoded.images
        probs = self.model.hidden_probs(x.flatten(1))[0]  # (H,)
        return {"features": [round(float(p), 6) for p in probs]}

    def features_batch(self, group: list[Decoded], generators: list[torch.Generator]
                       ) -> list[dict[str, Any]]:
        x = torch.cat([d.images[0] for d in group]).flatten(1)
        return [{"features": [round(float(p), 6) for p in probs]}
                for probs in self.model.hidden_probs(x)]
