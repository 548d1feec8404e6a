"""Refining an image model: a reward model fit to the ratings for a generator (GAN, VAE),
the family's own objective on rated images for the rest (RBM, autoencoder)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training import checkpoint
from training.data.errors import DataError
from training.feedback import FeedbackError, FeedbackSet, GenerationRecord
from training.loop import optimizer_step
from training.rebuild import Rebuilt
from training.recipes.image import ImageRecipe, Sampler
from training.refinement.config import RefineConfig


class ImageRefinement:
    """The family's own objective on batches mixing well-rated images and training data."""

    def __init__(self, recipe: ImageRecipe, rebuilt: Rebuilt, feedback: FeedbackSet,
                 cfg: RefineConfig, log: Callable[[str], None]) -> None:
        self.recipe, self.run, self.cfg = recipe, rebuilt.run, cfg
        self.family = family = rebuilt.family.name
        weights: dict[str, float] = {}
        records: dict[str, GenerationRecord] = {}
        # Every judgement as a score per image, for a reward model: ratings as given, a
        # preference's chosen image 5 and its rejected image 1.
        scores: dict[str, float] = {}
        all_records: dict[str, GenerationRecord] = {}
        self.preferred: set[str] = set()
        for g, rating in feedback.ratings():
            if g.family == family:
                scores[g.generation_id] = float(rating)
                all_records[g.generation_id] = g
        for chosen_g, rejected_g in feedback.preferences():
            if chosen_g.family == family:
                for g, score in ((chosen_g, 5.0), (rejected_g, 1.0)):
                    scores[g.generation_id] = score
                    all_records[g.generation_id] = g
                    self.preferred.add(g.generation_id)
        for g, rating in feedback.ratings():
            if g.family == family and rating >= cfg.min_rating:
                weights[g.generation_id] = max(weights.get(g.generation_id, 0.0),
                                               float(rating - cfg.min_rating + 1))
                records[g.generation_id] = g
        self.ratings_used = len(weights)
        chosen = 0
        for g, _ in feedback.preferences():
            if g.family == family:
                weights[g.generation_id] = float(5 - cfg.min_rating + 1)
                records[g.generation_id] = g
                chosen += 1
        self.chosen_used = chosen
        if not weights and not scores:
            raise DataError(f"the feedback channel holds no ratings of {cfg.min_rating} or "
                            f"more and no preferences of {family} generations: nothing to "
                            f"refine on")
        for record in all_records.values():
            self._image(record)  # every judged image is checked, used or not
        images = [self._image(record) for record in records.values()]
        labels = [self._label(record) for record in records.values()]
        spec = self.recipe.spec
        shape = (0, spec.channels, spec.size, spec.size)
        self.x = (torch.from_numpy(np.stack(images)) if images else torch.zeros(shape)
                  ).to(self.recipe.device)  # (N, C, S, S)
        self.y = torch.tensor(labels, dtype=torch.long, device=self.recipe.device)
        if self.recipe.conditional:  # an unknown class: the feature classifier's guess
            unknown = self.y < 0
            if bool(unknown.any()) and self.recipe.features.labelled:
                guess = self.recipe.features.probabilities(self.x[unknown]).argmax(1)
                self.y[unknown] = guess.to(self.recipe.device)
            self.y = self.y.clamp(min=0)
        self.w = torch.tensor([weights[g] for g in records], dtype=torch.float)
        self.reward: torch.nn.Module | None = None
        self.noise = torch.Generator(device=self.recipe.device).manual_seed(self.run.seed + 5)
        self.sampler: Sampler | None = recipe.sampler()
        if self.sampler is not None and len(set(scores.values())) > 1:
            judged = torch.from_numpy(np.stack([self._image(all_records[g])
                                                for g in scores]))
            self.reward = fit_reward(judged, torch.tensor(list(scores.values())),
                                     seed=self.run.seed).to(self.recipe.device)
            self.method = "reward fine-tuning"
            self.ratings_used = sum(1 for g in scores if g not in self.preferred)
            log(f"refining by {self.method}: a reward model fit to {len(scores)} judged "
                f"images, weight {cfg.reward_weight:g}, beside the {self.family}'s own loss")
        else:
            if not records:
                raise DataError(f"the feedback channel holds no ratings of {cfg.min_rating} "
                                f"or more and no preferences of {family} generations: "
                                f"nothing to refine on")
            recipe.batch_mix = self._mix  # the family's train_step draws the mix
            self.method = "rating-weighted fine-tuning"
            log(f"refining by {self.method}: {len(records)} rated images "
                f"({self.ratings_used} ratings >= {cfg.min_rating}, {chosen} preferred), "
                f"{cfg.feedback_share:.0%} of each batch")

    def _image(self, record: GenerationRecord) -> np.ndarray:
        from training.models.formats.png import decode_png

        where = f"generations/{record.generation_id}.json"
        png = record.output.get("png_base64")
        if not isinstance(png, str):
            raise FeedbackError(f"{where}: an image generation needs output.png_base64")
        try:
            image = decode_png(base64.b64decode(png))
        except Exception as exc:  # PIL raises several kinds for a bad image
            raise FeedbackError(f"{where}: output.png_base64 is not a readable PNG "
                                f"({exc})") from None
        spec = self.recipe.spec
        if image.shape != (spec.channels, spec.size, spec.size):
            raise FeedbackError(f"{where}: the image is {tuple(image.shape)}; this model "
                                f"makes {(spec.channels, spec.size, spec.size)}")
        return image

    def _label(self, record: GenerationRecord) -> int:
        if not self.recipe.conditional:
            return -1  # a model without classes: a class in the request meant nothing
        classes = list(self.recipe.spec.classes)
        value = record.parameters.get("class")
        if value is None and isinstance(record.inputs, Mapping):
            value = record.inputs.get("class")
        if value is None:
            return -1
        if str(value) in classes:
            return classes.index(str(value))
        if isinstance(value, int) and 0 <= value < len(classes):
            return value
        raise FeedbackError(f"generations/{record.generation_id}.json: class {value!r} is "
                            f"not one of this model's classes {classes}")

    def _mix(self, x: torch.Tensor, y: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A training batch with `feedback_share` of its rows swapped for rated images,
        drawn in proportion to their rating."""
        n = max(1, round(len(x) * self.cfg.feedback_share))
        picks = torch.multinomial(self.w, n, replacement=True, generator=self.recipe.batches)
        picks = picks.to(self.recipe.device)
        x = torch.cat([x[n:], self.x[picks]]) if n < len(x) else self.x[picks]
        if y is not None:
            y = torch.cat([y[n:], self.y[picks]]) if n < len(y) else self.y[picks]
        return x, y

    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {**self.recipe.state_objects(), "refine_noise": self.noise}

    def train_step(self, lr: float) -> dict[str, float]:
        out: dict[str, float] = self.recipe.train_step(lr)  # the family's own loss: the anchor
        if self.reward is None:
            return out
        recipe = self.recipe
        recipe.model.train()
        n = self.run.batch_size
        y = recipe.class_batch(n)
        if y is not None:
            y = y[torch.randperm(n, generator=recipe.batches).to(y.device)]
        assert self.sampler is not None  # a reward model is fit only for such families
        images, optimizer = self.sampler(n, y, self.noise)
        reward = self.reward(images).mean()
        # A separate step, so the weight scales its rate: Adam ignores a loss's scale.
        optimizer_step(optimizer, -reward, lr=lr * self.cfg.reward_weight,
                       grad_clip=self.run.grad_clip)
        out["reward"] = reward.item()
        return out

    def evaluate(self) -> dict[str, float]:
        return self.recipe.evaluate()

    def lineage(self) -> dict[str, Any]:
        return {"method": self.method, "pairs": self.chosen_used, "ratings": self.ratings_used,
                "images": len(self.x) if self.reward is None else None,
                "settings": {"min_rating": self.cfg.min_rating,
                             "feedback_share": self.cfg.feedback_share,
                             "reward_weight": self.cfg.reward_weight}}


def fit_reward(images: torch.Tensor, scores: torch.Tensor, *, seed: int,
               steps: int = 300) -> torch.nn.Module:
    """A small MLP predicting the rating of an image from its pixels: the judge, learned.

    Scores 1-5 are mapped to [-1, 1]; the net is frozen once fit, so the generator is
    trained against it, never the other way round."""
    target = ((scores.float() - 3.0) / 2.0).unsqueeze(1)  # (N, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(images[0].numel(), 32),
                                  torch.nn.Tanh(), torch.nn.Linear(32, 1))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(steps):
            loss = F.mse_loss(net(images.float()), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


