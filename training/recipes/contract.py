"""The training contract of a family: what the job, evaluation, refinement and rebuild use.

A family's recipe module (`Family.recipe_module`) defines `Recipe`, built as

    Recipe(run, model_cfg, *, train_dir, validation_dir, device, log)

from the shared training settings, the family's config and the data channels. Every recipe
offers what the training loop drives (`Trainable`: a step, an evaluation, the state a
resumed run needs) and what the job and rebuild read (`Recipe`). Most families get these
from one of two bases, which add what evaluation and refinement use of their kind:

    training.recipes.sequence.SequenceRecipe   next-token models (transformer, rnn):
        loss(x, y), bits_per_char(), continuations() for melodies, the held-out tokens
    training.recipes.image.ImageRecipe          image models (gan, vae, rbm, autoencoder):
        samples(), references, feature space, differentiable_samples() for reward tuning

musegan's recipe stands on its own (an arrangement of four tracks is neither).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from training import checkpoint
    from training.config import TrainConfig
    from training.models.formats.tokenizer import TextTokenizer


class Trainable(Protocol):
    """What the training loop (`training.loop.fit`) drives: a recipe, or a refinement."""

    def train_step(self, lr: float) -> dict[str, float]:
        """One optimisation step at learning rate ``lr``: its losses, and a throughput
        count (`tokens`, `images` or `bars`, see `training.loop.THROUGHPUT_UNITS`)."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics, beside their baselines."""
        ...

    def state_objects(self) -> Mapping[str, checkpoint.Stateful]:
        """Networks, optimizers and random generators a resumed run needs, by name."""
        ...


class Recipe(Trainable, Protocol):
    """A family's training: its data, its model, and the artifact it writes."""

    run: TrainConfig
    device: torch.device
    model: torch.nn.Module
    modality: str  # "text", "image", "music" or "track": what the data was
    #: the text tokenizer the model reads with (None unless the data was text); rebuild
    #: checks that the data given again makes the artifact's own
    tokenizer: TextTokenizer | None
    data_summary: dict[str, Any]

    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        """Write the artifact (training.artifact.write_artifact) into ``directory``."""
        ...
