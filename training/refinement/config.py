"""A refinement's settings: its own hyperparameters, and the defaults it starts from."""

from __future__ import annotations

from dataclasses import dataclass

from training.hyperparameters import require

#: Settings a refinement starts from, unless the job sets them: a short, gentle run.

#: The parent's time budget is not inherited: a refinement is budgeted by its own steps.
REFINE_DEFAULTS = {"max_steps": "60", "max_seconds": "0", "learning_rate": "0.0003",
                   "min_learning_rate": "0.0001", "warmup_steps": "5", "log_interval": "10",
                   "eval_interval": "1000000"}


@dataclass
class RefineConfig:
    dpo_beta: float = 0.1  # DPO's β: how far the refined policy may move from the reference
    min_rating: int = 4  # ratings at or above this count as well rated (1-5)
    #: sequence and diffusion models: weight of the family's own loss on training data
    anchor_weight: float = 0.2
    feedback_share: float = 0.5  # rbm, autoencoder: share of each batch from rated images
    reward_weight: float = 0.3  # gan, vae: rate of the reward step relative to the own loss's
    #: diffusion: Diffusion-DPO's β, on per-pixel mean errors (Wallace et al. use 2000-5000)
    diffusion_dpo_beta: float = 2000.0

    def validate(self) -> None:
        require(self.dpo_beta > 0, "dpo_beta", "must be positive")
        require(1 <= self.min_rating <= 5, "min_rating", "must be between 1 and 5")
        require(self.anchor_weight >= 0, "anchor_weight", "must be 0 or more")
        require(0 < self.feedback_share <= 1, "feedback_share", "must be in (0, 1]")
        require(self.reward_weight > 0, "reward_weight", "must be positive")
        require(self.diffusion_dpo_beta > 0, "diffusion_dpo_beta", "must be positive")
