"""The model families genkiln trains, by the name the ``family`` hyperparameter takes."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from training.hyperparameters import HyperparameterError


@dataclass(frozen=True)
class Family:
    name: str
    modalities: tuple[str, ...]  # "text" | "image" | "music": what its data may be
    config_module: str  # module holding the family's model config dataclass
    config_class: str
    recipe_module: str  # module with the family's `Recipe` (data, steps, export, load)
    metrics: tuple[str, ...]  # names printed as `name=value`, for metric_definitions
    description: str

    @property
    def config_cls(self) -> type:
        return getattr(importlib.import_module(self.config_module), self.config_class)

    def recipe(self) -> Any:
        return importlib.import_module(self.recipe_module)

    @property
    def metric_definitions(self) -> list[dict[str, str]]:
        """SageMaker `metric_definitions`: one regex per metric the training log prints."""
        return [{"Name": m, "Regex": f"{m}=([0-9.eE+-]+)"} for m in self.metrics]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            name="transformer",
            modalities=("text",),
            config_module="training.models.transformer",
            config_class="TransformerConfig",
            recipe_module="training.recipes.transformer",
            metrics=("train_loss", "val_loss", "val_perplexity", "ngram_perplexity",
                     "tokens_per_second", "learning_rate"),
            description="GPT-style decoder language model with a byte-level BPE tokenizer",
        ),
        Family(
            name="rnn",
            modalities=("music", "text"),
            config_module="training.models.rnn",
            config_class="RNNConfig",
            recipe_module="training.recipes.rnn",
            metrics=("train_loss", "val_loss", "val_perplexity", "ngram_perplexity",
                     "in_key_share", "tokens_per_second", "learning_rate"),
            description="LSTM/GRU sequence model: continues melodies (Bach chorales by "
                        "default) or text",
        ),
    ]
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise HyperparameterError(
            f"family must be one of {', '.join(sorted(FAMILIES))}; got {name!r}") from None
