"""The model families genkiln trains, by the name the ``family`` hyperparameter takes."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.hyperparameters import HyperparameterError
from training.models.tuning import Tuning, categorical, continuous, integer

if TYPE_CHECKING:
    import torch

    from training.config import TrainConfig
    from training.recipes.contract import Recipe


@dataclass(frozen=True)
class Family:
    name: str
    #: what its data may be: "text" | "image" | "music" | "track" | "captioned" (images
    #: with their captions)
    modalities: tuple[str, ...]
    config_module: str  # module holding the family's model config dataclass
    config_class: str
    recipe_module: str  # module with the family's `Recipe` (data, steps, export, load)
    metrics: tuple[str, ...]  # names printed as `name=value`, for metric_definitions
    description: str
    #: The objective and ranges of a SageMaker tuning job (`genkiln train --tune`).
    tuning: Tuning
    #: What `genkiln evaluate` must measure for the pipeline to register the model, as
    #: METRIC<=NUMBER or METRIC>=NUMBER: met after default training on the bundled data,
    #: far from met untrained (docs/families.md has the figures).
    register_if: str
    #: Defaults of the shared training settings (TrainConfig) that suit this family better
    #: than TrainConfig's own, as hyperparameter strings; anything the user sets wins.
    train_defaults: dict[str, str] = field(default_factory=dict)
    #: Whether the family trains data-parallel over several processes; when it can't,
    #: why (said in the error a multi-process run gets).
    data_parallel: bool = True
    data_parallel_note: str = ""
    #: Input channels the family reads besides train and validation; each reaches its
    #: recipe as a keyword argument of that name (a Path, or None when not given).
    channels: tuple[str, ...] = ()

    @property
    def config_cls(self) -> type:
        return getattr(importlib.import_module(self.config_module), self.config_class)

    def build_recipe(self, run: TrainConfig, model_cfg: Any, *, train_dir: Path | None,
                     validation_dir: Path | None, device: torch.device,
                     log: Callable[[str], None] = print,
                     channels: Mapping[str, Path | None] | None = None) -> Recipe:
        """The family's training recipe (training.recipes.contract) on these settings and
        data; ``channels`` holds the family's own channels (`channels`)."""
        given = channels or {}
        unknown = sorted(set(given) - set(self.channels))
        assert not unknown, f"{self.name} reads no channels {unknown}"
        recipe: Recipe = importlib.import_module(self.recipe_module).Recipe(
            run, model_cfg, train_dir=train_dir, validation_dir=validation_dir, device=device,
            log=log, **{name: given.get(name) for name in self.channels})
        return recipe

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
                     "ngram4_perplexity", "val_bits_per_char", "ngram_bits_per_char",
                     "ngram4_bits_per_char", "lzma_bits_per_char",
                     "tokens_per_second",
                     "learning_rate"),
            description="GPT-style decoder language model with a byte-level BPE tokenizer",
            register_if="val_loss<=5.0",
            tuning=Tuning("val_loss", "Minimize", {
                "learning_rate": continuous(3e-4, 1e-2, "Logarithmic"),
                "weight_decay": continuous(0.0, 0.2),
                "dropout": continuous(0.0, 0.2),
                "n_layer": integer(2, 6),
            }),
            # A small decoder trained for minutes learns more from the same tokens at a
            # higher peak rate and with more, smaller steps (docs/families.md: the runs).
            train_defaults={"learning_rate": "0.003", "min_learning_rate": "0.0003",
                            "batch_size": "8", "max_steps": "3200", "warmup_steps": "200",
                            "eval_interval": "800"},
        ),
        Family(
            name="rnn",
            modalities=("music", "text"),
            config_module="training.models.rnn",
            config_class="RNNConfig",
            recipe_module="training.recipes.rnn",
            metrics=("train_loss", "val_loss", "val_perplexity", "ngram_perplexity",
                     "ngram4_perplexity", "val_bits_per_char", "ngram_bits_per_char",
                     "ngram4_bits_per_char", "lzma_bits_per_char",
                     "in_key_share",
                     "tokens_per_second", "learning_rate"),
            description="LSTM/GRU sequence model: continues melodies (Bach chorales by "
                        "default) or text",
            register_if="val_loss<=5.0",
            tuning=Tuning("val_loss", "Minimize", {
                "learning_rate": continuous(3e-4, 1e-2, "Logarithmic"),
                "dropout": continuous(0.0, 0.3),
                "hidden_size": categorical("128", "256", "384", "512"),
                "cell": categorical("lstm", "gru"),
            }),
            # A few minutes on a CPU; a tenth of the chorales held out.
            train_defaults={"max_steps": "500", "eval_interval": "100", "val_fraction": "0.1"},
        ),
        Family(
            name="gan",
            modalities=("image",),
            config_module="training.models.gan",
            config_class="GANConfig",
            recipe_module="training.recipes.gan",
            metrics=("d_loss", "g_loss", "val_fid", "val_fid_floor", "val_fid_untrained",
                     "val_fid_gaussian", "val_fid_gmm", "val_confidence", "images_per_second",
                     "learning_rate"),
            description="class-conditional DCGAN with a spectrally normalised discriminator",
            register_if="val_fid<=50",
            tuning=Tuning("val_fid", "Minimize", {
                "learning_rate": continuous(1e-4, 1e-3, "Logarithmic"),
                "label_smoothing": continuous(0.0, 0.2),
                "latent_dim": categorical("16", "32", "64"),
            }),
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
                     "val_fid_untrained", "val_fid_gaussian", "val_fid_gmm", "val_confidence",
                     "images_per_second", "learning_rate"),
            description="convolutional variational autoencoder, optionally class-conditional",
            register_if="val_fid<=50",
            tuning=Tuning("val_fid", "Minimize", {
                "learning_rate": continuous(3e-4, 5e-3, "Logarithmic"),
                "latent_dim": integer(4, 32),
                "beta": continuous(0.5, 2.0),
            }),
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
                     "val_fid", "val_fid_floor", "val_fid_gaussian", "val_fid_gmm",
                     "val_probe_accuracy", "pixels_probe_accuracy",
                     "sklearn_rbm_probe_accuracy", "sklearn_rbm_pll", "images_per_second",
                     "learning_rate"),
            description="Bernoulli RBM trained by contrastive divergence (CD-k or persistent)",
            register_if="val_probe_accuracy>=0.9",
            tuning=Tuning("val_probe_accuracy", "Maximize", {
                "learning_rate": continuous(0.005, 0.1, "Logarithmic"),
                "n_hidden": categorical("64", "128", "256", "512"),
                "cd_steps": integer(1, 5),
                "momentum": continuous(0.0, 0.9),
            }),
            train_defaults={**_IMAGE_DEFAULTS, "learning_rate": "0.05",
                            "min_learning_rate": "0.005", "batch_size": "10",
                            "max_steps": "10000", "grad_clip": "0", "eval_interval": "5000",
                            "log_interval": "1000"},
            data_parallel=False,
            data_parallel_note="persistent contrastive divergence carries one set of Gibbs "
                               "chains and their random state from step to step",
        ),
        Family(
            name="autoencoder",
            modalities=("image",),
            config_module="training.models.autoencoder",
            config_class="AutoencoderConfig",
            recipe_module="training.recipes.autoencoder",
            metrics=("train_loss", "val_loss", "val_auroc", "val_auroc_corrupted",
                     "val_auroc_noise", "val_auroc_untrained", "val_auroc_pca",
                     "val_false_positive_rate", "val_corrupted_detection_rate",
                     "images_per_second", "learning_rate"),
            description="convolutional autoencoder: latent codes and anomaly scores",
            register_if="val_auroc>=0.8",
            tuning=Tuning("val_auroc", "Maximize", {
                "learning_rate": continuous(3e-4, 5e-3, "Logarithmic"),
                "latent_dim": integer(4, 32),
                "width": categorical("16", "32", "64"),
            }),
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
                     "val_metric_gap", "val_metric_gap_untrained", "blind_bach_metric_gap",
                     "bars_per_second",
                     "learning_rate"),
            description="MuseGAN-style conditional GAN: a melody in, alto, tenor and bass "
                        "out (Bach chorales by default, or four-part MIDI)",
            register_if="val_metric_gap<=0.2",
            tuning=Tuning("val_metric_gap", "Minimize", {
                "learning_rate": continuous(2e-4, 3e-3, "Logarithmic"),
                "gp_weight": continuous(1.0, 20.0),
                "d_steps": integer(1, 5),
                "latent_dim": categorical("16", "32", "64"),
            }),
            train_defaults={"batch_size": "16", "learning_rate": "0.001",
                            "min_learning_rate": "0.0002", "weight_decay": "0",
                            "grad_clip": "0", "warmup_steps": "50", "max_steps": "1000",
                            "eval_interval": "250", "log_interval": "50",
                            "val_fraction": "0.1"},
        ),
        Family(
            name="racer",
            modalities=("track",),
            config_module="training.models.racer",
            config_class="RacerConfig",
            recipe_module="training.recipes.racer",
            metrics=("episode_reward", "episode_progress", "episode_completion",
                     "policy_loss", "value_loss", "entropy",
                     *(f"{who}_{m}" for who in ("val", "pursuit", "random") for m in (
                         "completion_rate", "lap_time", "off_track_rate", "mean_speed",
                         "progress", "heldout_completion_rate", "heldout_lap_time",
                         "heldout_off_track_rate")),
                     "val_lap_time_ratio", "transitions_per_second", "learning_rate"),
            description="DeepRacer-style driving policy: PPO on a reward function over "
                        "simulated tracks (lidar or camera)",
            register_if="val_completion_rate>=0.9",
            tuning=Tuning("val_lap_time_ratio", "Minimize", {
                "learning_rate": continuous(3e-4, 3e-3, "Logarithmic"),
                "beta_entropy": continuous(0.001, 0.05, "Logarithmic"),
                "discount_factor": continuous(0.95, 0.999),
                "num_episodes_between_training": integer(10, 40),
                "num_epochs": integer(3, 10),
            }),
            # DeepRacer's defaults: a constant learning rate of 3e-4, batches of 64.
            # A step is one policy update; an hour of DeepRacer training is ~100 of them.
            train_defaults={"learning_rate": "0.0003", "min_learning_rate": "0.0003",
                            "warmup_steps": "0", "batch_size": "64", "weight_decay": "0",
                            "grad_clip": "0.5", "max_steps": "20",
                            "eval_interval": "10", "log_interval": "1",
                            "checkpoint_interval": "5"},
            data_parallel=False,
            data_parallel_note="PPO's rollouts run in this process's vectorized "
                               "environments; use num_envs to drive more cars at once",
            channels=("reward",),
        ),
        Family(
            name="diffusion",
            modalities=("captioned",),
            config_module="training.models.diffusion",
            config_class="DiffusionConfig",
            recipe_module="training.recipes.diffusion",
            metrics=("train_loss", "val_loss", "val_named_accuracy",
                     *(f"val_{a}_accuracy" for a in ("shape", "colour", "size", "position",
                                                     "fill", "background")),
                     "val_shape_only_accuracy", "val_unnamed_accuracy",
                     "val_chance_accuracy", "val_unconditional_accuracy",
                     "val_relation_accuracy", "val_fid", "val_fid_floor",
                     "images_per_second", "learning_rate"),
            description="prompt -> image: a text-conditioned diffusion UNet (diffusers) "
                        "with classifier-free guidance (captioned scenes by default)",
            register_if="val_named_accuracy>=0.6",
            tuning=Tuning("val_loss", "Minimize", {
                "learning_rate": continuous(2e-4, 2e-3, "Logarithmic"),
                "width": categorical("32", "48", "64", "96"),
                "condition_dropout": continuous(0.05, 0.2),
                "layers_per_block": categorical("1", "2"),
            }),
            # About 15 minutes of training on 2 CPU cores, evaluated once at the end
            # (the prompt-detail evaluation draws ~800 pictures).
            train_defaults={"batch_size": "32", "learning_rate": "0.001",
                            "min_learning_rate": "0.0001", "warmup_steps": "100",
                            "weight_decay": "0", "grad_clip": "1.0", "max_steps": "1500",
                            "eval_interval": "1500", "log_interval": "50",
                            "checkpoint_interval": "250", "val_fraction": "0.1"},
        ),
    ]
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise HyperparameterError(
            f"family must be one of {', '.join(sorted(FAMILIES))}; got {name!r}") from None
