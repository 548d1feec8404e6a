"""Settings every family shares: budget, optimisation, evaluation, data handling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from training.hyperparameters import require


@dataclass
class TrainConfig:
    family: str = "transformer"  # model family to train (see `genkiln families`)
    seed: int = 1337  # seeds weights, data order and the held-out split
    max_steps: int = 600  # optimizer steps; training ends at max_steps or max_seconds
    max_seconds: float = 0.0  # wall-clock training budget in seconds; 0 means none
    batch_size: int = 32  # sequences (or examples) per optimizer step
    learning_rate: float = 1e-3  # peak learning rate after warm-up
    min_learning_rate: float = 1e-4  # floor of the cosine decay
    warmup_steps: int = 50  # linear warm-up steps from 0 to learning_rate
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables
    eval_interval: int = 200  # steps between held-out evaluations
    eval_batches: int = 20  # batches averaged per held-out evaluation
    log_interval: int = 10  # steps between train metric lines
    checkpoint_interval: int = 250  # steps between checkpoints, when the job has a checkpoint dir
    val_fraction: float = 0.05  # share of documents held out when there is no validation channel
    text_key: str = "text"  # field that holds the text in .jsonl records
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto picks cuda when present
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # bf16 autocast; auto: bf16 on CUDA only
    processes_per_host: int = 1  # data-parallel training processes per host; 0: one per GPU
    num_threads: int = 0  # CPU threads per process; 0: the faster of 1 and all, measured

    def validate(self) -> None:
        require(self.max_steps >= 1, "max_steps", "must be at least 1")
        require(self.max_seconds >= 0, "max_seconds", "must be 0 (no limit) or positive")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(0 <= self.min_learning_rate <= self.learning_rate, "min_learning_rate",
                "must be between 0 and learning_rate")
        require(self.warmup_steps >= 0, "warmup_steps", "must be 0 or more")
        require(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        require(self.grad_clip >= 0, "grad_clip", "must be 0 (off) or positive")
        require(self.eval_interval >= 1, "eval_interval", "must be at least 1")
        require(self.eval_batches >= 1, "eval_batches", "must be at least 1")
        require(self.log_interval >= 1, "log_interval", "must be at least 1")
        require(self.checkpoint_interval >= 1, "checkpoint_interval", "must be at least 1")
        require(self.processes_per_host >= 0, "processes_per_host",
                "must be 0 (one per GPU) or positive")
        require(0 < self.val_fraction < 1, "val_fraction", "must be between 0 and 1")
        require(self.num_threads >= 0, "num_threads", "must be 0 (measured) or positive")
