"""Training recipe of the autoencoder: reconstruction, then a calibrated anomaly threshold.

The threshold is the `threshold_percentile` of reconstruction errors on held-out normal
images, not on the training images the model has learned to reconstruct (whose errors are
smaller: 99% of them flagged 15.9% of normal held-out digits). Its false-positive rate is
measured by cross-fitting: a threshold set on each half of the held-out split flags what
share of the other half; `val_false_positive_rate` is the mean of the two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training import checkpoint
from training.evaluation.images import auroc, corrupt
from training.loop import optimizer_step
from training.models.autoencoder import Autoencoder, AutoencoderConfig
from training.recipes.image import ImageRecipe


class Recipe(ImageRecipe):
    family = "autoencoder"
    cfg: AutoencoderConfig
    model: Autoencoder

    def build(self) -> None:
        self.model = Autoencoder(self.cfg, self.spec).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.run.learning_rate,
                                           weight_decay=self.run.weight_decay)
        # Anomalies to tell apart from held-out digits: corrupted digits and pure noise.
        generator = torch.Generator().manual_seed(self.run.seed + 2)
        self.corrupted = corrupt(self.x_val, generator).to(self.device)
        self.noise = torch.rand(self.x_val.shape, generator=generator).to(self.device)
        # The held-out split in two halves, for cross-fitting the threshold's error rate.
        order = torch.randperm(len(self.x_val), generator=generator).numpy()
        self.halves = (order[:len(order) // 2], order[len(order) // 2:])

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def training_state(self) -> dict[str, checkpoint.Stateful]:
        return {"model": self.model, "optimizer": self.optimizer}

    def reference_metrics(self) -> dict[str, float]:
        """Untrained weights, and PCA with as many components as the code has dimensions
        (the linear autoencoder), scored on the same held-out and anomalous images."""
        flat = self.x_train.flatten(1).cpu()
        mean = flat.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(flat - mean, full_matrices=False)
        basis = v[:self.cfg.latent_dim].T  # (D, latent_dim)

        def pca_error(x: torch.Tensor) -> np.ndarray:
            centred = x.flatten(1).cpu() - mean
            return ((centred - centred @ basis @ basis.T) ** 2).mean(1).numpy()

        anomalies = np.r_[pca_error(self.corrupted), pca_error(self.noise)]
        return {"val_auroc_untrained": self.evaluate()["val_auroc"],
                "val_auroc_pca": auroc(pca_error(self.x_val), anomalies)}

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        x, _ = self.batch()
        loss = self.model.loss(x)
        optimizer_step(self.optimizer, loss, lr=lr, grad_clip=self.run.grad_clip)
        return {"train_loss": loss.item(), "images": float(len(x))}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        normal = self.model.reconstruction_error(self.x_val).cpu().numpy()
        corrupted = self.model.reconstruction_error(self.corrupted).cpu().numpy()
        noise = self.model.reconstruction_error(self.noise).cpu().numpy()
        threshold = self._threshold(normal)
        a, b = self.halves
        flagged = [(normal[test] > self._threshold(normal[fit])).mean()
                   for fit, test in ((a, b), (b, a))]
        return {"val_loss": float(normal.mean()),
                "val_auroc": auroc(normal, np.r_[corrupted, noise]),
                "val_auroc_corrupted": auroc(normal, corrupted),
                "val_auroc_noise": auroc(normal, noise),
                # Normal held-out images the saved threshold flags, against the nominal
                # 1 - threshold_percentile / 100; and the corrupted ones it catches.
                "val_false_positive_rate": float(np.mean(flagged)),
                "val_corrupted_detection_rate": float((corrupted > threshold).mean())}

    def _threshold(self, normal: np.ndarray) -> float:
        return float(np.percentile(normal, self.cfg.threshold_percentile))

    @torch.no_grad()
    def model_args(self) -> dict[str, Any]:
        self.model.eval()
        normal = self.model.reconstruction_error(self.x_val).cpu().numpy()
        return {**super().model_args(), "threshold": self._threshold(normal)}

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        """Held-out images (odd columns) beside their reconstructions (even columns)."""
        x = self.x_val[:32]
        pairs = torch.stack([x, self.model(x)], dim=1).flatten(0, 1)  # (2n, C, S, S)
        return pairs.cpu().numpy()
