"""Training recipe of the GAN: alternate D and G updates; score samples by Fréchet distance."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from training import checkpoint, distributed
from training.averaging import moving_average
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
        self.averaged = moving_average(self.model.generator, self.cfg.ema_decay, buffers=True) \
            if self.cfg.ema_decay else None

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def training_state(self) -> dict[str, checkpoint.Stateful]:
        state: dict[str, checkpoint.Stateful] = {
            "model": self.model, "g_optimizer": self.g_opt, "d_optimizer": self.d_opt,
            "noise": self.noise_rng}
        if self.averaged is not None:
            state["averaged_generator"] = self.averaged
        return state

    @contextlib.contextmanager
    def sampling(self) -> Iterator[GAN]:
        """The GAN with the averaged generator in place, once it has averaged anything
        (an artifact's weights, loaded by rebuild, are already the average)."""
        trained = self.model.generator
        if self.averaged is not None and int(self.averaged.n_averaged) > 0:
            self.model.generator = self.averaged.module  # type: ignore[assignment]
        try:
            yield self.model.eval()
        finally:
            self.model.generator = trained

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
        if self.averaged is not None:
            self.averaged.update_parameters(self.model.generator)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "images": float(len(x))}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed + 1)
        with self.sampling() as gan:
            generated = gan.sample(EVAL_SAMPLES, self.class_batch(EVAL_SAMPLES), generator)
        return self.fid_metrics(generated)

    def tensors(self) -> dict[str, torch.Tensor]:
        with self.sampling() as gan:
            return dict(gan.state_dict())

    def sampler(self) -> Sampler:
        return self._differentiable_samples

    def _differentiable_samples(self, n: int, y: torch.Tensor | None, noise: torch.Generator
                                ) -> tuple[torch.Tensor, torch.optim.Optimizer]:
        """The generator's images; its noise comes from its own (checkpointed) generator."""
        return (self.model.generator(self.model.noise(n, self.noise_rng), y) + 1) / 2, self.g_opt

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        generator = torch.Generator(device=self.device).manual_seed(self.run.seed)
        with self.sampling() as gan:
            return gan.sample(64, self.class_batch(64), generator).cpu().numpy()
