"""The model families genkiln trains, by the name the ``family`` hyperparameter takes."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
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
    #: Defaults of the shared training settings (TrainConfig) that suit this family better
    #: than TrainConfig's own, as hyperparameter strings; anything the user sets wins.
    train_defaults: dict[str, str] = field(default_factory=dict)

    @property
    def config_cls(self) -> type:
        return getattr(importlib.import_module(self.config_module), self.config_class)

    def recipe(self) -> Any:
        return importlib.import_module(self.recipe_module)

    @property
    def metric_definitions(self) -> list[dict[str, str]]:
        """SageMaker `metric_definitions`: one regex per metric the training log prints."""
        return [{"Name": m, "Regex": f"{m}=([0-9.eE+-]+)"} for m in self.metrics]


#: Training settings every image family starts from: bigger batches, no weight decay, a
#: larger held-out split (Fréchet distances need a few hundred images to be stable).
_IMAGE_DEFAULTS = {
    "batch_size": "64", "weight_decay": "0", "warmup_steps": "100", "val_fraction": "0.2",
    "eval_interval": "2000", "eval_batches": "1", "log_interval": "100",
}

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
            # A small decoder trained for minutes learns faster at a higher peak rate:
            # held-out perplexity after 600 steps 63.7 at 3e-3 against 91.3 at 1e-3.
            train_defaults={"learning_rate": "0.003", "min_learning_rate": "0.0003"},
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
            # About 5 minutes on 2 CPU cores; a tenth of the chorales held out, so the
            # perplexity and in-key share rest on some 40 melodies.
            train_defaults={"max_steps": "500", "eval_interval": "100", "val_fraction": "0.1"},
        ),
        Family(
            name="gan",
            modalities=("image",),
            config_module="training.models.gan",
            config_class="GANConfig",
            recipe_module="training.recipes.gan",
            metrics=("d_loss", "g_loss", "val_fid", "val_fid_floor", "val_fid_untrained",
                     "val_confidence", "images_per_second", "learning_rate"),
            description="class-conditional DCGAN with a spectrally normalised discriminator",
            train_defaults={**_IMAGE_DEFAULTS, "learning_rate": "0.0003",
                            "min_learning_rate": "0.0001", "max_steps": "3000",
                            "grad_clip": "0", "eval_interval": "1000"},
        ),
        Family(
            name="vae",
            modalities=("image",),
            config_module="training.models.vae",
            config_class="VAEConfig",
            recipe_module="training.recipes.vae",
            metrics=("train_loss", "val_loss", "val_fid", "val_fid_floor",
                     "val_fid_untrained", "val_confidence", "images_per_second",
                     "learning_rate"),
            description="convolutional variational autoencoder, optionally class-conditional",
            train_defaults={**_IMAGE_DEFAULTS, "learning_rate": "0.002", "max_steps": "3000",
                            "eval_interval": "1000"},
        ),
        Family(
            name="rbm",
            modalities=("image",),
            config_module="training.models.rbm",
            config_class="RBMConfig",
            recipe_module="training.recipes.rbm",
            metrics=("train_loss", "train_reconstruction", "val_reconstruction", "val_pll",
                     "val_probe_accuracy", "pixels_probe_accuracy",
                     "sklearn_rbm_probe_accuracy", "sklearn_rbm_pll", "images_per_second",
                     "learning_rate"),
            description="Bernoulli RBM trained by contrastive divergence (CD-k or persistent)",
            train_defaults={**_IMAGE_DEFAULTS, "learning_rate": "0.05",
                            "min_learning_rate": "0.005", "batch_size": "10",
                            "max_steps": "10000", "grad_clip": "0", "eval_interval": "5000",
                            "log_interval": "1000"},
        ),
        Family(
            name="autoencoder",
            modalities=("image",),
            config_module="training.models.autoencoder",
            config_class="AutoencoderConfig",
            recipe_module="training.recipes.autoencoder",
            metrics=("train_loss", "val_loss", "val_auroc", "val_auroc_corrupted",
                     "val_auroc_noise", "val_auroc_untrained", "val_auroc_pca",
                     "images_per_second", "learning_rate"),
            description="convolutional autoencoder: latent codes and anomaly scores",
            train_defaults={**_IMAGE_DEFAULTS, "learning_rate": "0.002", "max_steps": "2000",
                            "eval_interval": "1000"},
        ),
        Family(
            name="musegan",
            modalities=("music",),
            config_module="training.models.musegan",
            config_class="MuseGANConfig",
            recipe_module="training.recipes.musegan",
            metrics=("d_loss", "g_loss", *(f"val_{m}{suffix}" for m in (
                         "empty_bar_rate", "pitch_classes", "qualified_note_rate",
                         "tonal_distance") for suffix in ("", "_real", "_untrained")),
                     "val_metric_gap", "val_metric_gap_untrained", "bars_per_second",
                     "learning_rate"),
            description="MuseGAN-style conditional GAN: a melody in, alto, tenor and bass "
                        "out (Bach chorales by default, or four-part MIDI)",
            train_defaults={"batch_size": "16", "learning_rate": "0.001",
                            "min_learning_rate": "0.0002", "weight_decay": "0",
                            "grad_clip": "0", "warmup_steps": "50", "max_steps": "1000",
                            "eval_interval": "250", "log_interval": "50",
                            "val_fraction": "0.1"},
        ),
    ]
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise HyperparameterError(
            f"family must be one of {', '.join(sorted(FAMILIES))}; got {name!r}") from None
