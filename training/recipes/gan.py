"""Training recipe of the GAN: alternate D and G updates; score samples by Fréchet distance."""

from __future__ import annotations

import numpy as np
import torch

from training import checkpoint, distributed
from training.loop import optimizer_step
from training.models.gan import GAN, GANConfig
from training.recipes.image import ImageRecipe, Sampler

#: Generated images per evaluation (Fréchet distance, confidence).
EVAL_SAMPLES = 1000


class Recipe(ImageRecipe):
    family = "gan"
    sampled_metrics = True
    cfg: GANConfig
    model: GAN

    def build(self) -> None:
        self.model = GAN(self.cfg, self.spec).to(self.device)
        if distributed.current().active and self.device.type == "cuda":
            # The generator's batch norm then normalises over the global batch, as on one
            # process. (SyncBatchNorm needs CUDA: on CPU each rank normalises over its own
            # rows, and the running statistics kept are rank 0's.)
            self.model.generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
                self.model.generator)
        betas = (self.cfg.beta1, 0.999)
        self.g_opt = torch.optim.Adam(self.model.generator.parameters(),
                                      lr=self.run.learning_rate, betas=betas)
        self.d_opt = torch.optim.Adam(self.model.discriminator.parameters(),
                                      lr=self.run.learning_rate, betas=betas)
        self.noise_rng = torch.Generator(device=self.device).manual_seed(self.run.seed + 3)

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def training_state(self) -> dict[str, checkpoint.Stateful]:
        return {"model": self.model, "g_optimizer": self.g_opt, "d_optimizer": self.d_opt,
                "noise": self.noise_rng}

    def reference_metrics(self) -> dict[str, float]:
        return {"val_fid_floor": self.fid_floor(),
                "val_fid_untrained": self.evaluate()["val_fid"],
                **self.statistical_baselines(conditional=self.conditional)}

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> None:
        optimizer_step(optimizer, loss, lr=lr, grad_clip=self.run.grad_clip)

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        x, y = self.batch()
        real = x * 2.0 - 1.0  # [0, 1] -> [-1, 1], the generator's tanh range
        # Noise for the whole global batch, this rank's rows of it: the noise generator
        # stays in step on every rank (and in the checkpoint rank 0 writes).
        z = self.model.noise(self.run.batch_size, self.noise_rng)
        fake = self.model.generator(z[distributed.current().part(self.run.batch_size)], y)
        d_loss = self.model.d_loss(real, fake, y)
        self._step(self.d_opt, d_loss, lr)
        g_loss = self.model.g_loss(fake, y)
        self._step(self.g_opt, g_loss, lr)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "images": float(len(x))}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed + 1)
        generated = self.model.sample(EVAL_SAMPLES, self.class_batch(EVAL_SAMPLES), generator)
        return self.fid_metrics(generated)

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def sampler(self) -> Sampler:
        return self._differentiable_samples

    def _differentiable_samples(self, n: int, y: torch.Tensor | None, noise: torch.Generator
                                ) -> tuple[torch.Tensor, torch.optim.Optimizer]:
        """The generator's images; its noise comes from its own (checkpointed) generator."""
        return (self.model.generator(self.model.noise(n, self.noise_rng), y) + 1) / 2, self.g_opt

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed)
        return self.model.sample(64, self.class_batch(64), generator).cpu().numpy()
