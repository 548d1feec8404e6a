"""Training recipe of the VAE: maximise the ELBO; score samples by Fréchet distance."""

from __future__ import annotations

import numpy as np
import torch

from training import checkpoint
from training.loop import optimizer_step
from training.models.vae import VAE, VAEConfig
from training.recipes.image import ImageRecipe, Sampler

#: Generated images per evaluation (Fréchet distance, confidence).
EVAL_SAMPLES = 1000


class Recipe(ImageRecipe):
    family = "vae"
    sampled_metrics = True
    cfg: VAEConfig
    model: VAE

    def build(self) -> None:
        self.model = VAE(self.cfg, self.spec).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.run.learning_rate,
                                           weight_decay=self.run.weight_decay)

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def training_state(self) -> dict[str, checkpoint.Stateful]:
        return {"model": self.model, "optimizer": self.optimizer}

    def reference_metrics(self) -> dict[str, float]:
        return {"val_fid_floor": self.fid_floor(),
                "val_fid_untrained": self.evaluate()["val_fid"],
                **self.statistical_baselines(conditional=self.conditional)}

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        x, y = self.batch()
        loss = self.model.loss(x, y)
        optimizer_step(self.optimizer, loss, lr=lr, grad_clip=self.run.grad_clip)
        return {"train_loss": loss.item(), "images": float(len(x))}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed + 1)
        y_val = self.y_val if self.conditional else None
        rec, kl = self.model.elbo_terms(self.x_val, y_val, generator=generator)
        self.model.fit_prior(self.x_train, self.y_train if self.conditional else None,
                             seed=self.run.seed)
        generated = self.model.sample(EVAL_SAMPLES, self.class_batch(EVAL_SAMPLES), generator)
        return {"val_loss": float((rec + kl).mean()), **self.fid_metrics(generated)}

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def sampler(self) -> Sampler:
        return self._differentiable_samples

    def _differentiable_samples(self, n: int, y: torch.Tensor | None, noise: torch.Generator
                                ) -> tuple[torch.Tensor, torch.optim.Optimizer]:
        """The decoder's mean images of prior draws."""
        z = self.model.prior_codes(n, y, noise)
        return torch.sigmoid(self.model.decode(z, y)), self.optimizer

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed)
        return self.model.sample(64, self.class_batch(64), generator).cpu().numpy()
