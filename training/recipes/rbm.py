"""Training recipe of the Bernoulli RBM, scored as scikit-learn's RBM example scores one.

The reference is scikit-learn's "Restricted Boltzmann Machine features for digit
classification": a logistic regression on the RBM's hidden-unit probabilities (C=6000)
beside one on raw pixels (C=100). Here scikit-learn's own `BernoulliRBM` is trained with
the same budget (hidden units, batch size, learning rate, images seen) as the reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from training import checkpoint
from training.evaluation.images import probe_accuracy
from training.loop import optimizer_step
from training.models.rbm import RBM, RBMConfig, pseudo_log_likelihood
from training.recipes.image import ImageRecipe

#: Inverse regularisation of the logistic regressions, as in scikit-learn's example.
PROBE_C_FEATURES = 6000.0
PROBE_C_PIXELS = 100.0


class Chains(nn.Module):
    """The negative chains of persistent CD: a module, so checkpoints carry them."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("v", v)  # (B, D) binary visible states
        self.v: torch.Tensor


#: Gibbs samples scored by Fréchet distance at each evaluation.
SAMPLES = 1000


class Recipe(ImageRecipe):
    family = "rbm"
    cfg: RBMConfig
    model: RBM

    def build(self) -> None:
        self.model = RBM(self.cfg, self.spec).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.run.learning_rate,
                                         momentum=self.cfg.momentum,
                                         weight_decay=self.run.weight_decay)
        self.v_train = self.x_train.flatten(1)  # (N, D)
        self.v_val = self.x_val.flatten(1)
        self.gibbs_rng = torch.Generator(device=self.device).manual_seed(self.run.seed + 3)
        self.chains = Chains(torch.bernoulli(self.batch()[0].flatten(1),
                                             generator=self.gibbs_rng))

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def training_state(self) -> dict[str, checkpoint.Stateful]:
        return {"model": self.model, "optimizer": self.optimizer, "gibbs": self.gibbs_rng,
                "chains": self.chains}

    def _labels(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.y_train is None or self.y_val is None:
            return None
        return self.y_train.cpu().numpy(), self.y_val.cpu().numpy()

    def reference_metrics(self) -> dict[str, float]:
        from sklearn.neural_network import BernoulliRBM

        out = {"val_pll_untrained": self._pll(self.model.W, self.model.visible_bias,
                                              self.model.hidden_bias),
               "val_fid_floor": self.fid_floor(),
               # The RBM models every image at once: unconditional baselines.
               **self.statistical_baselines(conditional=False)}
        epochs = max(1, math.ceil(self.run.max_steps * self.run.batch_size / len(self.v_train)))
        reference = BernoulliRBM(n_components=self.cfg.n_hidden,
                                 learning_rate=self.run.learning_rate,
                                 batch_size=self.run.batch_size, n_iter=epochs,
                                 random_state=self.run.seed)
        train, val = self.v_train.cpu().numpy(), self.v_val.cpu().numpy()
        reference.fit(train)
        out["sklearn_rbm_pll"] = self._pll(
            torch.from_numpy(reference.components_).float(),
            torch.from_numpy(reference.intercept_visible_).float(),
            torch.from_numpy(reference.intercept_hidden_).float())
        labels = self._labels()
        if labels is not None:
            out["pixels_probe_accuracy"] = probe_accuracy(train, labels[0], val, labels[1],
                                                          C=PROBE_C_PIXELS)
            out["sklearn_rbm_probe_accuracy"] = probe_accuracy(
                reference.transform(train), labels[0], reference.transform(val), labels[1],
                C=PROBE_C_FEATURES)
        return out

    @torch.no_grad()
    def _pll(self, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
        """Mean pseudo-log-likelihood of the held-out images, binarised at 0.5, in nats."""
        v = (self.v_val > 0.5).float().cpu()
        return float(pseudo_log_likelihood(v, W.detach().cpu(), b.detach().cpu(),
                                           c.detach().cpu()).mean())

    def train_step(self, lr: float) -> dict[str, float]:
        x, _ = self.batch()
        v = x.flatten(1)  # (B, D) pixel intensities, used as probabilities
        start = self.chains.v if self.cfg.persistent else torch.bernoulli(
            v, generator=self.gibbs_rng)
        negative, _ = self.model.gibbs(start, self.cfg.cd_steps, self.gibbs_rng)
        if self.cfg.persistent:
            self.chains.v = negative
        loss = self.model.loss(v, negative)
        # The CD update as it is: no clipping (the family trains on one process).
        optimizer_step(self.optimizer, loss, lr=lr, grad_clip=0.0)
        return {"train_loss": loss.item(),
                "train_reconstruction": float(self.model.reconstruction_error(v).mean()),
                "images": float(len(v))}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        out = {"val_reconstruction": float(self.model.reconstruction_error(self.v_val).mean()),
               "val_pll": self._pll(self.model.W, self.model.visible_bias,
                                    self.model.hidden_bias)}
        # Its Gibbs samples, scored as the generators' samples are.
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed + 1)
        drawn = self.model.sample(SAMPLES, self.cfg.gibbs_steps, generator)
        out.update(self.fid_metrics(drawn.view(SAMPLES, *self.x_val.shape[1:])))
        labels = self._labels()
        if labels is not None:
            out["val_probe_accuracy"] = probe_accuracy(
                self.model.hidden_probs(self.v_train).cpu().numpy(), labels[0],
                self.model.hidden_probs(self.v_val).cpu().numpy(), labels[1],
                C=PROBE_C_FEATURES)
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed)
        return self.model.sample(64, self.cfg.gibbs_steps, generator).cpu().numpy()
