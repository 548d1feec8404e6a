"""A Bernoulli restricted Boltzmann machine trained by contrastive divergence (Hinton 2002).

Visible units v (the pixels, read as probabilities in [0, 1]) and binary hidden units h
share the energy E(v, h) = -b·v - c·h - hᵀWv. Summing out h gives the free energy
    F(v) = -b·v - Σ_j softplus(c_j + W_j·v),    p(v) ∝ exp(-F(v)).
The log-likelihood gradient is E_data[-∂F] - E_model[-∂F]; CD-k estimates the model term
with k Gibbs steps started at the data, persistent CD (Tieleman 2008) with chains kept
from one update to the next. Both are the gradient of F(v_data) - F(v_negative) with the
negative samples held fixed, which is how `loss` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.artifact import Artifact
from training.hyperparameters import require
from training.models.convnets import ImageSpec, check_image_size, load_image_model


@dataclass
class RBMConfig:
    image_size: int = 8  # images are resized to image_size × image_size (power of two, 8-128)
    n_hidden: int = 256  # binary hidden units: the features `features` returns
    cd_steps: int = 1  # k of CD-k: Gibbs steps per update for the negative samples
    persistent: bool = True  # persistent CD: negative chains carry over between updates
    momentum: float = 0.5  # SGD momentum of the updates
    gibbs_steps: int = 1000  # Gibbs steps of a `sample` request (and the artifact's samples)

    def validate(self) -> None:
        check_image_size(self.image_size)
        require(self.n_hidden >= 1, "n_hidden", "must be at least 1")
        require(self.cd_steps >= 1, "cd_steps", "must be at least 1")
        require(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        require(self.gibbs_steps >= 1, "gibbs_steps", "must be at least 1")


class RBM(nn.Module):
    def __init__(self, cfg: RBMConfig, spec: ImageSpec) -> None:
        super().__init__()
        self.spec = spec
        n_visible = spec.channels * spec.size * spec.size
        self.W = nn.Parameter(torch.randn(cfg.n_hidden, n_visible) * 0.01)  # (H, D)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))  # b, (D,)
        self.hidden_bias = nn.Parameter(torch.zeros(cfg.n_hidden))  # c, (H,)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) for each row of v, (B,)."""
        return -v @ self.visible_bias - F.softplus(v @ self.W.T + self.hidden_bias).sum(1)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ self.W.T + self.hidden_bias)  # p(h=1|v), (B, H)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h @ self.W + self.visible_bias)  # p(v=1|h), (B, D)

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, steps: int, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``steps`` v -> h -> v Gibbs steps; return the last binary v and p(v|h)."""
        probs = v
        for _ in range(steps):
            h = torch.bernoulli(self.hidden_probs(v), generator=generator)
            probs = self.visible_probs(h)
            v = torch.bernoulli(probs, generator=generator)
        return v, probs

    def loss(self, v_data: torch.Tensor, v_negative: torch.Tensor) -> torch.Tensor:
        """Contrastive divergence (Hinton 2002): its gradient is the CD update."""
        return self.free_energy(v_data).mean() - self.free_energy(v_negative.detach()).mean()

    @torch.no_grad()
    def reconstruction_error(self, v: torch.Tensor) -> torch.Tensor:
        """Mean squared error of one mean-field pass v -> p(h|v) -> p(v|h), per image."""
        return ((self.visible_probs(self.hidden_probs(v)) - v) ** 2).mean(1)

    @torch.no_grad()
    def pseudo_log_likelihood(self, v: torch.Tensor) -> torch.Tensor:
        """Σ_i log p(v_i | v_-i) for binary rows v, exactly, (B,) (Besag 1975).

        log p(v_i | v_-i) = -softplus(F(v) - F(v with unit i flipped)).
        """
        return pseudo_log_likelihood(v, self.W, self.visible_bias, self.hidden_bias)

    @torch.no_grad()
    def sample(self, n: int, steps: int, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """Gibbs chains from uniform noise; the last p(v|h) as (n, C, S, S) images."""
        device = self.W.device
        v = torch.bernoulli(torch.full((n, self.W.shape[1]), 0.5, device=device),
                            generator=generator)
        _, probs = self.gibbs(v, steps, generator)
        return probs.view(n, self.spec.channels, self.spec.size, self.spec.size)


def pseudo_log_likelihood(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
                          c: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Exact pseudo-log-likelihood of binary rows v under any Bernoulli RBM (W, b, c)."""
    pre = v @ W.T + c  # (B, H)
    free = -v @ b - F.softplus(pre).sum(1)  # (B,)
    sign = 1.0 - 2.0 * v  # +1 where a flip turns a unit on, -1 where it turns it off
    total = torch.zeros(len(v), dtype=v.dtype, device=v.device)
    for start in range(0, v.shape[1], chunk):
        s = sign[:, start:start + chunk]  # (B, k)
        flipped_pre = pre[:, None, :] + s[:, :, None] * W.T[None, start:start + chunk]
        flipped = -(v @ b)[:, None] - s * b[start:start + chunk] \
            - F.softplus(flipped_pre).sum(2)  # (B, k): F(v with unit i flipped)
        total += -F.softplus(free[:, None] - flipped).sum(1)
    return total


@dataclass(frozen=True)
class LoadedRBM:
    model: RBM
    spec: ImageSpec
    gibbs_steps: int  # default Gibbs steps of a sample request


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu") -> LoadedRBM:
    cfg, spec, model, _ = load_image_model(artifact, RBMConfig, RBM, device)
    return LoadedRBM(model=model, spec=spec, gibbs_steps=cfg.gibbs_steps)
