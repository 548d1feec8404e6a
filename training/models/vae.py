"""A convolutional variational autoencoder (Kingma & Welling 2013), optionally conditional.

The encoder maps an image to a diagonal Gaussian q(z|x); a decoder maps z to Bernoulli
pixel probabilities p(x|z). Training maximises the evidence lower bound
    ELBO = E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I))
with the reparameterisation trick. With `conditional` both networks also see the class
(Sohn et al. 2015's CVAE), so `sample` can ask for a digit.

Samples are drawn from a Gaussian mixture fitted to the training images' codes (per
class; `prior_components`), not from N(0, I): the codes a trained encoder gives do not
fill the standard normal evenly, and decoding from its empty regions gives the blurred
in-between images VAE samples are known for; fitting the codes' density after training
("ex-post density estimation", Ghosh et al. 2020) draws from where real images lie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
class VAEConfig:
    image_size: int = 8  # images are resized to image_size × image_size (power of two, 8-128)
    latent_dim: int = 16  # dimensions of the latent code z
    width: int = 32  # channels of the first conv layer; doubles at each halving of the side
    conditional: bool = True  # condition on the class when the data has classes (subfolders)
    beta: float = 0.25  # weight of the KL term; 1 is the true ELBO (Higgins et al. 2017 vary
    # it): below 1, sharper decodes, whose codes the fitted prior then samples where they lie
    prior_components: int = 10  # Gaussians (a class) fitted to the training codes, sampled
    # from; 0 samples N(0, I)

    def validate(self) -> None:
        check_image_size(self.image_size)
        require(self.latent_dim >= 1, "latent_dim", "must be at least 1")
        require(self.width >= 4, "width", "must be at least 4")
        require(self.beta > 0, "beta", "must be positive")
        require(0 <= self.prior_components <= 64, "prior_components",
                "must be 0 (sample N(0, I)) to 64")


class VAE(nn.Module):
    prior_means: torch.Tensor  # (classes or 1, prior_components, latent_dim)
    prior_scales: torch.Tensor  # (..., latent_dim, latent_dim): Cholesky factors
    prior_logits: torch.Tensor  # (classes or 1, prior_components): log weights

    def __init__(self, cfg: VAEConfig, spec: ImageSpec) -> None:
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.beta = cfg.beta
        self.num_classes = spec.num_classes
        k = self.num_classes  # one-hot class appended to the encoder's features and to z
        self.encoder = ConvEncoder(spec.channels, spec.size, cfg.width, 2 * cfg.latent_dim,
                                   cond_features=k)
        self.decoder = ConvDecoder(cfg.latent_dim + k, spec.channels, spec.size, cfg.width)
        # The sampling prior: a mixture a class (one for all without classes), N(0, I)
        # until `fit_prior` fits it to codes.
        self.prior_components = m = cfg.prior_components
        if m:
            d, groups = cfg.latent_dim, max(1, k)
            self.register_buffer("prior_means", torch.zeros(groups, m, d))
            self.register_buffer("prior_scales", torch.eye(d).expand(groups, m, d, d).clone())
            self.register_buffer("prior_logits", torch.zeros(groups, m))

    def _onehot(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if self.num_classes == 0:
            return None
        assert y is not None, "a conditional VAE needs the class of every image"
        return F.one_hot(y, self.num_classes).float()  # (B, k)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, self._onehot(y)).chunk(2, dim=1)  # (B, d) each
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        onehot = self._onehot(y)
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)  # (B, d + k)
        return self.decoder(z)  # (B, C, S, S) logits

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None,
                   generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: the reconstruction term -E_q[log p(x|z)] and KL(q(z|x) || p(z))."""
        mu, logvar = self.encode(x, y)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)  # the reparameterisation trick
        logits = self.decode(z, y)
        # Bernoulli likelihood of pixels in [0, 1] (Kingma & Welling 2013, appendix C.1).
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)  # closed form, (B,)
        return rec, kl

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The negative ELBO (with beta on the KL), averaged over the batch, in nats."""
        rec, kl = self.elbo_terms(x, y)
        return (rec + self.beta * kl).mean()

    @torch.no_grad()
    def best_class(self, x: torch.Tensor) -> torch.Tensor | None:
        """For a conditional model: the class under which each image has the best ELBO."""
        if self.num_classes == 0:
            return None
        scores = []
        for c in range(self.num_classes):
            y = torch.full((len(x),), c, dtype=torch.long, device=x.device)
            mu, _ = self.encode(x, y)
            rec = F.binary_cross_entropy_with_logits(self.decode(mu, y), x,
                                                     reduction="none").flatten(1).sum(1)
            scores.append(rec + 0.5 * mu.pow(2).sum(1))
        return torch.stack(scores, dim=1).argmin(dim=1)  # (B,)

    def prior_codes(self, n: int, y: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes drawn from the sampling prior (of class y's mixture), (n, d)."""
        device = next(self.parameters()).device
        eps = torch.randn((n, self.latent_dim), generator=generator, device=device)
        if not self.prior_components:
            return eps
        rows = y if y is not None else torch.zeros(n, dtype=torch.long, device=device)
        probs = torch.softmax(self.prior_logits[rows], dim=1)  # (n, m)
        pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        scale = self.prior_scales[rows, pick]  # (n, d, d), lower triangular
        return self.prior_means[rows, pick] + (scale @ eps[..., None]).squeeze(-1)

    @torch.no_grad()
    def fit_prior(self, x: torch.Tensor, y: torch.Tensor | None, seed: int) -> None:
        """Fit the sampling prior to the codes (encoder means) of images x (with classes
        y): a full-covariance Gaussian mixture each class (scikit-learn)."""
        if not self.prior_components:
            return
        from sklearn.mixture import GaussianMixture

        codes = self.encode(x, y)[0].double().cpu().numpy()
        labels = np.zeros(len(codes), dtype=np.int64) if y is None else y.cpu().numpy()
        for group in range(self.prior_logits.shape[0]):
            mine = codes[labels == group]
            m = min(self.prior_components, len(mine) // 2)
            if m < 1:
                continue  # too few images: this class keeps N(0, I)
            mixture = GaussianMixture(n_components=m, covariance_type="full", reg_covar=1e-4,
                                      random_state=seed + group).fit(mine)
            like = self.prior_means
            self.prior_means[group, :m] = torch.from_numpy(mixture.means_).to(like)
            self.prior_scales[group, :m] = torch.linalg.cholesky(
                torch.from_numpy(mixture.covariances_)).to(like)
            logits = torch.full((self.prior_components,), float("-inf"), dtype=like.dtype)
            logits[:m] = torch.from_numpy(np.log(mixture.weights_)).to(like)
            self.prior_logits[group] = logits.to(like.device)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw codes from the prior and return the decoder's mean images, (n, C, S, S) in
        [0, 1]."""
        return self.render(self.prior_codes(n, y, generator), y)

    @torch.no_grad()
    def render(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean images in [0, 1] for given codes, (n, C, S, S)."""
        return torch.sigmoid(self.decode(z, y))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mu, _ = self.encode(x, y)
        return torch.sigmoid(self.decode(mu, y))

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int,
                    ya: torch.Tensor | None = None, yb: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """Decode ``steps`` points on the line from image a's code to image b's, (1, C, S, S)
        each; a conditional model moves from a's class to b's along the same line."""
        mu_a, _ = self.encode(a, ya)
        mu_b, _ = self.encode(b, yb)
        t = torch.linspace(0.0, 1.0, steps, device=mu_a.device)[:, None]  # (steps, 1)
        z = (1 - t) * mu_a + t * mu_b  # (steps, d)
        onehot_a, onehot_b = self._onehot(ya), self._onehot(yb)
        if onehot_a is not None and onehot_b is not None:
            z = torch.cat([z, (1 - t) * onehot_a + t * onehot_b], dim=1)  # (steps, d + k)
        return torch.sigmoid(self.decoder(z))  # (steps, C, S, S)


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu"
                  ) -> LoadedImageModel[VAE]:
    _, spec, model, _ = load_image_model(artifact, VAEConfig, VAE, device)
    return LoadedImageModel(model=model, spec=spec)
