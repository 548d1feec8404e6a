"""Serving the VAE: `sample`, `reconstruct` an input, `interpolate` between two inputs."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from inference.handlers.image import (
    Decoded,
    ImageHandler,
    ImageInput,
    ImageRequest,
    Kind,
    OneImageRequest,
    SampleRequest,
)
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.vae import from_artifact


class ReconstructRequest(OneImageRequest):
    kind: Literal["reconstruct"] = "reconstruct"
    class_: int | str | None = Field(None, alias="class", description="the input's class "
                                     "(conditional models; inferred when left out)")

    def requested_class(self) -> int | str | None:
        return self.class_


class InterpolateRequest(ImageRequest):
    kind: Literal["interpolate"] = "interpolate"
    images: list[ImageInput] = Field(min_length=2, max_length=2,
                                     description="the two end points")
    steps: int = Field(8, ge=2, le=64, description="images from the first to the second")

    def inputs(self) -> list[ImageInput]:
        return list(self.images)


class VAEHandler(ImageHandler):
    family = "vae"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        loaded = from_artifact(artifact, device)
        super().__init__(loaded.spec, device, {
            "sample": Kind(SampleRequest, self.sample, self.sample_batch, images=True),
            "reconstruct": Kind(ReconstructRequest, self.reconstruct, images=True),
            "interpolate": Kind(InterpolateRequest, self.interpolate, images=True)})
        self.model = loaded.model

    def _label_of(self, decoded: Decoded, x: torch.Tensor) -> torch.Tensor | None:
        if not self.spec.classes:
            return None
        if decoded.label is not None:
            return torch.tensor([decoded.label], device=self.device)
        return self.model.best_class(x)

    def sample(self, decoded: Decoded, generator: torch.Generator
               ) -> tuple[torch.Tensor, dict[str, Any]]:
        assert isinstance(decoded.request, SampleRequest)
        n = decoded.request.n
        return self.model.sample(n, self.classes_for(decoded, n), generator), \
            {"class": decoded.label}

    def sample_batch(self, group: list[Decoded], generators: list[torch.Generator]
                     ) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        sizes = [d.request.n for d in group]  # type: ignore[attr-defined]
        classes = [self.classes_for(d, n) for d, n in zip(group, sizes, strict=True)]
        z = torch.cat([self.model.prior_codes(n, c, g)
                       for n, c, g in zip(sizes, classes, generators, strict=True)])
        y = None if classes[0] is None else torch.cat(classes)  # type: ignore[arg-type]
        return self.split(self.model.render(z, y), sizes,
                          [{"class": d.label} for d in group])

    def reconstruct(self, decoded: Decoded, generator: torch.Generator
                    ) -> tuple[torch.Tensor, dict[str, Any]]:
        (x,) = decoded.images
        y = self._label_of(decoded, x)
        out = self.model.reconstruct(x, y)
        error = float(((out - x) ** 2).mean())
        return out, {"class": None if y is None else int(y[0]), "reconstruction_error": error}

    def interpolate(self, decoded: Decoded, generator: torch.Generator
                    ) -> tuple[torch.Tensor, dict[str, Any]]:
        assert isinstance(decoded.request, InterpolateRequest)
        a, b = decoded.images
        ya, yb = self._label_of(decoded, a), self._label_of(decoded, b)
        images = self.model.interpolate(a, b, decoded.request.steps, ya, yb)
        classes = None if ya is None or yb is None else [int(ya[0]), int(yb[0])]
        return images, {"classes": classes}
