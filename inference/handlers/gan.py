"""Serving the GAN: `sample` images, of one class or of every class in turn."""

from __future__ import annotations

from typing import Any

import torch

from inference.handlers.image import Decoded, ImageHandler, Kind, SampleRequest
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.gan import from_artifact


class GANHandler(ImageHandler):
    family = "gan"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        loaded = from_artifact(artifact, device)
        super().__init__(loaded.spec, device, {
            "sample": Kind(SampleRequest, self.sample, self.sample_batch, images=True)})
        self.model = loaded.model

    def sample(self, decoded: Decoded, generator: torch.Generator
               ) -> tuple[torch.Tensor, dict[str, Any]]:
        assert isinstance(decoded.request, SampleRequest)
        n = decoded.request.n
        images = self.model.sample(n, self.classes_for(decoded, n), generator)
        return images, {"class": decoded.label}

    def sample_batch(self, group: list[Decoded], generators: list[torch.Generator]
                     ) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        sizes = [d.request.n for d in group]  # type: ignore[attr-defined]
        z = torch.cat([self.model.noise(n, g) for n, g in zip(sizes, generators, strict=True)])
        classes = [self.classes_for(d, n) for d, n in zip(group, sizes, strict=True)]
        y = None if classes[0] is None else torch.cat(classes)  # type: ignore[arg-type]
        return self.split(self.model.render(z, y), sizes,
                          [{"class": d.label} for d in group])
