"""A class-conditional DCGAN (Radford et al. 2015) with the usual stabilisers.

The generator G maps noise z (and a class) through transposed convolutions with batch
norm to an image in [-1, 1]; the discriminator D scores images as real or generated.
They play the minimax game of Goodfellow et al. 2014, with the non-saturating generator
loss. What makes it train reliably on small data:
- spectral normalisation of every D layer (Miyato et al. 2018) bounds D's Lipschitz constant;
- one-sided label smoothing (Salimans et al. 2016): real targets are 1 - label_smoothing;
- a projection discriminator (Miyato & Koyama 2018) for the class: D(x, y) = ψ(φ(x)) +
  embed(y)·φ(x), so the class enters as an inner product instead of a concatenation;
- the generator that samples (and that the artifact keeps) is an exponential moving average
  of the trained one's weights and batch-norm statistics (Karras et al. 2018, Yazıcı et al.
  2019), which smooths out the oscillation of adversarial updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from training.artifact import Artifact
from training.hyperparameters import require
from training.models.convnets import (
    ConvDecoder,
    ConvEncoder,
    ImageSpec,
    LoadedImageModel,
    check_image_size,
    load_image_model,
)


@dataclass
class GANConfig:
    image_size: int = 8  # images are resized to image_size × image_size (power of two, 8-128)
    latent_dim: int = 32  # dimensions of the noise z the generator maps to an image
    g_width: int = 32  # channels of the generator's last feature map (doubling toward 4×4)
    d_width: int = 32  # channels of the discriminator's first feature map
    conditional: bool = True  # condition on the class when the data has classes (subfolders)
    label_smoothing: float = 0.1  # one-sided: D's target for real images is 1 - this
    spectral_norm: bool = True  # spectral normalisation of the discriminator's layers
    beta1: float = 0.5  # Adam's first-moment decay for both networks (DCGAN's choice)
    ema_decay: float = 0.999  # the generator that samples is a moving average of its
    # weights (Karras et al. 2018; 0: the last weights)

    def validate(self) -> None:
        check_image_size(self.image_size)
        require(self.latent_dim >= 1, "latent_dim", "must be at least 1")
        require(self.g_width >= 4, "g_width", "must be at least 4")
        require(self.d_width >= 4, "d_width", "must be at least 4")
        require(0 <= self.label_smoothing < 0.5, "label_smoothing", "must be in [0, 0.5)")
        require(0 <= self.beta1 < 1, "beta1", "must be in [0, 1)")
        require(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig, spec: ImageSpec) -> None:
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.num_classes = spec.num_classes
        self.embed = nn.Embedding(max(1, spec.num_classes), cfg.latent_dim)
        self.body = ConvDecoder(2 * cfg.latent_dim if spec.num_classes else cfg.latent_dim,
                                spec.channels, spec.size, cfg.g_width, batchnorm=True)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            assert y is not None, "a conditional generator needs a class per image"
            z = torch.cat([z, self.embed(y)], dim=1)  # (B, 2 * latent_dim)
        return torch.tanh(self.body(z))  # (B, C, S, S) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig, spec: ImageSpec) -> None:
        super().__init__()
        self.num_classes = spec.num_classes
        self.net = ConvEncoder(spec.channels, spec.size, cfg.d_width, 1,
                               spectral=cfg.spectral_norm)
        embed = nn.Embedding(max(1, spec.num_classes), self.net.flat_features)
        self.embed = spectral_norm(embed) if cfg.spectral_norm else embed

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net.features(x)  # (B, F)
        logit = self.net.head(h).squeeze(1)  # (B,)
        if self.num_classes:
            assert y is not None, "a conditional discriminator needs a class per image"
            logit = logit + (self.embed(y) * h).sum(1)  # the projection term
        return logit  # (B,) logits of "real"


class GAN(nn.Module):
    """Both networks, so one state dict (and one artifact) holds the pair."""

    def __init__(self, cfg: GANConfig, spec: ImageSpec) -> None:
        super().__init__()
        self.smoothing = cfg.label_smoothing
        self.generator = Generator(cfg, spec)
        self.discriminator = Discriminator(cfg, spec)

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor,
               y: torch.Tensor | None) -> torch.Tensor:
        """-log D(x) - log(1 - D(G(z))) (Goodfellow et al. 2014), real targets smoothed."""
        real_logits = self.discriminator(real, y)
        fake_logits = self.discriminator(fake.detach(), y)
        return (F.binary_cross_entropy_with_logits(
                    real_logits, torch.full_like(real_logits, 1.0 - self.smoothing))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))

    def g_loss(self, fake: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The non-saturating loss -log D(G(z)): strong gradients while D wins."""
        logits = self.discriminator(fake, y)
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn((n, self.generator.latent_dim), generator=generator, device=device)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, C, S, S) images in [0, 1]."""
        return self.render(self.noise(n, generator), y)

    @torch.no_grad()
    def render(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] for given noise (a server draws each request's own noise)."""
        return (self.generator(z, y) + 1.0) / 2.0


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu"
                  ) -> LoadedImageModel[GAN]:
    _, spec, model, _ = load_image_model(artifact, GANConfig, GAN, device)
    return LoadedImageModel(model=model, spec=spec)
