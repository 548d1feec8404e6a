"""A convolutional autoencoder: images squeezed through a small code and rebuilt.

Trained to minimise the mean squared reconstruction error, it serves two classic uses:
dimensionality reduction (`encode` gives the code) and anomaly detection (inputs unlike
the training images reconstruct badly; `score` compares the error with a threshold
calibrated on held-out normal images).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.artifact import Artifact
from training.hyperparameters import require
from training.models.convnets import (
    ConvDecoder,
    ConvEncoder,
    ImageSpec,
    check_image_size,
    load_image_model,
)


@dataclass
class AutoencoderConfig:
    image_size: int = 8  # images are resized to image_size × image_size (power of two, 8-128)
    latent_dim: int = 10  # size of the code `encode` returns: the bottleneck
    width: int = 32  # channels of the first conv layer; doubles at each halving of the side
    threshold_percentile: float = 99.0  # anomaly threshold: this percentile of held-out
    #                                     normal images' reconstruction errors (~1% flagged)

    def validate(self) -> None:
        check_image_size(self.image_size)
        require(self.latent_dim >= 1, "latent_dim", "must be at least 1")
        require(self.width >= 4, "width", "must be at least 4")
        require(0 < self.threshold_percentile < 100, "threshold_percentile",
                "must be between 0 and 100 (e.g. 99)")


class Autoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig, spec: ImageSpec) -> None:
        super().__init__()
        self.encoder = ConvEncoder(spec.channels, spec.size, cfg.width, cfg.latent_dim)
        self.decoder = ConvDecoder(cfg.latent_dim, spec.channels, spec.size, cfg.width)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.encode(x)))  # (B, C, S, S) in [0, 1]

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self(x), x)

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error per image, (B,): the anomaly score."""
        return ((self(x) - x) ** 2).flatten(1).mean(1)


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu") -> LoadedAutoencoder:
    cfg, spec, model, extras = load_image_model(artifact, AutoencoderConfig, Autoencoder,
                                                device)
    return LoadedAutoencoder(model=model, spec=spec, threshold=float(extras["threshold"]),
                             percentile=cfg.threshold_percentile)


@dataclass(frozen=True)
class LoadedAutoencoder:
    model: Autoencoder
    spec: ImageSpec
    threshold: float  # reconstruction errors above it are flagged as anomalies
    percentile: float  # the percentile of training errors the threshold sits at
