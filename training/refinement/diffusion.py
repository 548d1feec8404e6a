"""Refining the diffusion family from people's judgements: Diffusion-DPO on preference
pairs (Wallace et al. 2023), else fine-tuning on well-rated pictures.

Diffusion-DPO asks the model to denoise the chosen picture better than the frozen
previous model does, by more than it denoises the rejected one: with the same timestep
and noise for both,

    loss = -log σ(-β/2 · [(e_θ(chosen) - e_ref(chosen)) - (e_θ(rejected) - e_ref(rejected))])

where e is a picture's (per-pixel mean) denoising error under its own prompt. Without
pairs, the DDPM loss on pictures rated `min_rating` or more, weighted by how well. Both
keep the DDPM loss on training data beside them (`anchor_weight`), so what the model
learned from its data stays.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from training import checkpoint
from training.data.errors import DataError
from training.feedback import FeedbackError, FeedbackSet, GenerationRecord
from training.loop import optimizer_step
from training.models.diffusion import diffusion_loss
from training.rebuild import Rebuilt
from training.recipes.diffusion import Recipe as DiffusionRecipe
from training.refinement.config import RefineConfig


class DiffusionRefinement:
    def __init__(self, recipe: DiffusionRecipe, rebuilt: Rebuilt, feedback: FeedbackSet,
                 cfg: RefineConfig, log: Callable[[str], None]) -> None:
        self.recipe, self.run, self.cfg = recipe, rebuilt.run, cfg
        family = rebuilt.family.name
        # (prompt, chosen picture, rejected picture): the i-th image of each generation.
        self.pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for chosen, rejected in feedback.preferences():
            if chosen.family == family and rejected.family == family:
                for a, b in zip(self._images(chosen), self._images(rejected), strict=False):
                    self.pairs.append((self._prompt(chosen), a, b))
        # (prompt, picture, weight) of well-rated generations.
        self.liked: list[tuple[str, torch.Tensor, float]] = []
        for g, rating in feedback.ratings():
            if g.family == family and rating >= cfg.min_rating:
                weight = float(rating - cfg.min_rating + 1)
                self.liked.extend((self._prompt(g), image, weight) for image in self._images(g))
        if self.pairs:
            self.method = "diffusion-dpo"
        elif self.liked:
            self.method = "fine-tuning on well-rated pictures"
        else:
            raise DataError(f"the feedback channel holds no preference pairs and no ratings "
                            f"of {cfg.min_rating} or more of {family} generations: nothing "
                            f"to refine on")
        # The frozen reference: the previous artifact's weights.
        self.reference = copy.deepcopy(recipe.model).eval().requires_grad_(False)
        self.rng = torch.Generator().manual_seed(self.run.seed + 11)
        log(f"refining by {self.method}: {len(self.pairs)} preference pairs of pictures, "
            f"{len(self.liked)} well-rated pictures")

    # --- reading the judgements --------------------------------------------------------
    def _prompt(self, record: GenerationRecord) -> str:
        inputs = record.inputs
        prompt = inputs.get("prompt", "") if isinstance(inputs, Mapping) else inputs
        if not isinstance(prompt, str):
            raise FeedbackError(f"generations/{record.generation_id}.json: a diffusion "
                                f"generation's inputs hold its prompt as a string")
        return prompt

    def _images(self, record: GenerationRecord) -> list[torch.Tensor]:
        """The generation's pictures, (C, S, S) in [0, 1] each."""
        from training.models.formats.png import decode_png

        where = f"generations/{record.generation_id}.json"
        encoded = record.output.get("images") or [record.output.get("png_base64")]
        spec = self.recipe.spec
        out = []
        for data in encoded:
            if not isinstance(data, str):
                raise FeedbackError(f"{where}: an image generation needs output.png_base64")
            try:
                image = decode_png(base64.b64decode(data))
            except Exception as exc:  # PIL raises several kinds for a bad image
                raise FeedbackError(f"{where}: an image is not a readable PNG ({exc})") \
                    from None
            if image.shape != (spec.channels, spec.size, spec.size):
                raise FeedbackError(f"{where}: the image is {tuple(image.shape)}; this model "
                                    f"makes {(spec.channels, spec.size, spec.size)}")
            out.append(torch.from_numpy(image))
        return out

    # --- training --------------------------------------------------------------------
    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {**self.recipe.state_objects(), "refine_batches": self.rng}

    def _draw(self, n: int) -> list[int]:
        return torch.randint(n, (min(self.run.batch_size, n),), generator=self.rng).tolist()

    def _dpo(self) -> tuple[torch.Tensor, dict[str, float]]:
        recipe = self.recipe
        picked = [self.pairs[i] for i in self._draw(len(self.pairs))]
        prompts = [p for p, _, _ in picked]
        ids, mask = recipe.tokens(prompts * 2, recipe.device)
        images = torch.stack([w for _, w, _ in picked] + [lose for _, _, lose in picked])
        images = images.to(recipe.device)
        n = len(picked)
        t = torch.randint(0, recipe.schedule.config.num_train_timesteps, (n,),
                          generator=self.rng).repeat(2).to(recipe.device)
        noise_seed = int(torch.randint(2**31, (1,), generator=self.rng))

        def errors(model: torch.nn.Module) -> torch.Tensor:
            # The same noise for chosen and rejected, and for policy and reference.
            generator = torch.Generator(device=recipe.device).manual_seed(noise_seed)
            noise = torch.randn(model.grid_shape(n), generator=generator,  # type: ignore
                                device=recipe.device).repeat(2, 1, 1, 1)
            return diffusion_loss(model, recipe.schedule, images, ids, mask,  # type: ignore
                                  generator, timesteps=t, noise=noise, reduce=False,
                                  weighted=False)

        with torch.no_grad():
            reference = errors(self.reference)
        policy = errors(recipe.model)
        gap = (policy - reference).view(2, n)  # chosen row, rejected row
        inside = -0.5 * self.cfg.diffusion_dpo_beta * (gap[0] - gap[1])
        loss = -F.logsigmoid(inside).mean()
        return loss, {"dpo_loss": loss.item(),
                      "reward_accuracy": float((inside > 0).float().mean())}

    def _liked(self) -> tuple[torch.Tensor, dict[str, float]]:
        recipe = self.recipe
        picked = [self.liked[i] for i in self._draw(len(self.liked))]
        ids, mask = recipe.tokens([p for p, _, _ in picked], recipe.device)
        images = torch.stack([image for _, image, _ in picked]).to(recipe.device)
        weights = torch.tensor([w for _, _, w in picked], device=recipe.device)
        each = diffusion_loss(recipe.model, recipe.schedule, images, ids, mask, self.rng,
                              reduce=False)
        loss = (each * weights).sum() / weights.sum()
        return loss, {"liked_loss": loss.item()}

    def train_step(self, lr: float) -> dict[str, float]:
        recipe = self.recipe
        recipe.model.train()
        loss, out = self._dpo() if self.pairs else self._liked()
        if self.cfg.anchor_weight > 0:
            x, ids, mask = recipe.batch()
            anchor = diffusion_loss(recipe.model, recipe.schedule, x, ids, mask, recipe.noise)
            loss = loss + self.cfg.anchor_weight * anchor
            out["train_loss"] = anchor.item()
        optimizer_step(recipe.optimizer, loss, lr=lr, grad_clip=self.run.grad_clip)
        recipe.ema.update_parameters(recipe.model)
        out["images"] = float(self.run.batch_size)
        return out

    def evaluate(self) -> dict[str, float]:
        return self.recipe.evaluate()

    def lineage(self) -> dict[str, Any]:
        return {"method": self.method, "pairs": len(self.pairs), "ratings": len(self.liked),
                "settings": {"diffusion_dpo_beta": self.cfg.diffusion_dpo_beta,
                             "min_rating": self.cfg.min_rating,
                             "anchor_weight": self.cfg.anchor_weight}}
