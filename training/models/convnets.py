"""Convolutional building blocks the image families share.

Images are square with a side that is a power of two (8 for the bundled digits). An
encoder halves the side with stride-2 convolutions down to 4×4, a decoder doubles it back
up from 4×4 with transposed convolutions (DCGAN's shape: Radford et al. 2015).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from training.artifact import Artifact, ArtifactError
from training.hyperparameters import require

M = TypeVar("M", bound=nn.Module)


def check_image_size(size: int) -> None:
    require(size >= 8 and size <= 128 and size & (size - 1) == 0, "image_size",
            f"must be a power of two from 8 to 128; got {size}")


def halvings(size: int) -> int:
    """Stride-2 steps between size × size and 4 × 4."""
    return size.bit_length() - 3


@dataclass(frozen=True)
class ImageSpec:
    """What a trained image model takes and makes; saved beside its config in model_args."""

    size: int  # side in pixels
    channels: int  # 1 (grayscale) or 3 (RGB)
    classes: tuple[str, ...]  # class names by index; () when the model is unconditional

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def as_dict(self) -> dict[str, Any]:
        return {"size": self.size, "channels": self.channels, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSpec:
        return cls(size=int(data["size"]), channels=int(data["channels"]),
                   classes=tuple(str(c) for c in data["classes"]))


class ConvEncoder(nn.Module):
    """(B, C, S, S) -> (B, out_features), optionally also seeing a condition vector."""

    def __init__(self, channels: int, size: int, width: int, out_features: int, *,
                 cond_features: int = 0, spectral: bool = False) -> None:
        super().__init__()

        def wrap(layer: nn.Module) -> nn.Module:
            return spectral_norm(layer) if spectral else layer

        layers: list[nn.Module] = [wrap(nn.Conv2d(channels, width, 3, 1, 1)), nn.LeakyReLU(0.2)]
        w = width
        for _ in range(halvings(size)):
            layers += [wrap(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2)]
            w *= 2
        self.trunk = nn.Sequential(*layers)
        self.flat_features = w * 4 * 4
        self.head = wrap(nn.Linear(self.flat_features + cond_features, out_features))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).flatten(1)  # (B, w*16)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        if cond is not None:
            h = torch.cat([h, cond], dim=1)  # (B, w*16 + cond_features)
        return self.head(h)


class ConvDecoder(nn.Module):
    """(B, in_features) -> (B, C, S, S) logits (pre-activation pixels)."""

    def __init__(self, in_features: int, channels: int, size: int, width: int, *,
                 batchnorm: bool = False) -> None:
        super().__init__()
        steps = halvings(size)
        w = width * 2 ** steps
        self.start = w
        self.fc = nn.Linear(in_features, w * 4 * 4)

        def norm(n: int) -> nn.Module:
            return nn.BatchNorm2d(n) if batchnorm else nn.Identity()

        layers: list[nn.Module] = [norm(w), nn.ReLU()]
        for _ in range(steps):
            layers += [nn.ConvTranspose2d(w, w // 2, 4, 2, 1), norm(w // 2), nn.ReLU()]
            w //= 2
        layers.append(nn.Conv2d(w, channels, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.start, 4, 4)  # (B, w, 4, 4)
        return self.body(h)  # (B, C, S, S)


def load_image_model(artifact: Artifact, config_cls: type, build: Callable[[Any, ImageSpec],
                     torch.nn.Module], device: str | torch.device
                     ) -> tuple[Any, ImageSpec, Any, dict[str, Any]]:
    """Rebuild a family's network from its artifact: (config, spec, model, extra args)."""
    args = artifact.model_args
    names = {f.name for f in fields(config_cls)}
    try:
        spec = ImageSpec.from_dict(args.pop("image"))
        cfg = config_cls(**{k: v for k, v in args.items() if k in names})
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{artifact.directory}: model_args do not fit this genkiln's "
                            f"{artifact.family} ({exc}); re-export the model") from exc
    extras = {k: v for k, v in args.items() if k not in names}
    model = build(cfg, spec)
    try:
        model.load_state_dict(artifact.tensors(device="cpu"), strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{artifact.directory}: weights do not match model_args "
                            f"({exc})") from exc
    return cfg, spec, model.to(device).eval(), extras


@dataclass(frozen=True)
class LoadedImageModel(Generic[M]):
    """What serving needs of an image family: the network and the images it works on."""

    model: M
    spec: ImageSpec
