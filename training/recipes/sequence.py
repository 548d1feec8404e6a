"""What the token-by-token families share: text prepared for them, and the training step.

A sequence recipe holds `train_tokens` and `val_tokens` (one array each), a `model` whose
`loss(x, y)` is next-token cross-entropy, and trains on random windows of `window`
tokens; held-out loss is measured on the same windows every time, beside an n-gram
baseline's perplexity on the same tokens.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import checkpoint, distributed, ngram
from training.compression import lzma_bits_per_char
from training.config import TrainConfig
from training.data import tokens as token_data
from training.data.folder import scan_folder
from training.data.text import TextCorpus, load_text_folder
from training.loop import optimizer_step
from training.models.formats.notes import EventVocabulary, Note
from training.models.formats.tokenizer import TextTokenizer


@dataclass(frozen=True)
class TextTokens:
    """A text corpus split, a BPE tokenizer trained on its training part, and both parts
    as token arrays (each document closed by <|endoftext|>)."""

    tokenizer: TextTokenizer
    train: np.ndarray
    val: np.ndarray
    documents: int
    characters: int
    val_characters: int
    #: bits per character of the held-out text to general-purpose compressors that have
    #: read the training text (training.compression)
    compressed: dict[str, float]


def tokenize_text(corpus: TextCorpus, run: TrainConfig, *, validation_dir: Path | None,
                  vocab_size: int) -> TextTokens:
    if validation_dir is not None:
        held_out = load_text_folder(scan_folder(validation_dir), text_key=run.text_key)
        train_docs, val_docs = corpus.documents, held_out.documents
    else:
        train_docs, val_docs = token_data.split(corpus.documents, run.val_fraction, run.seed,
                                                corpus.source)
    tokenizer = TextTokenizer.train(train_docs, vocab_size=vocab_size)
    eot = tokenizer.eot_id
    return TextTokens(
        tokenizer=tokenizer,
        train=token_data.concat(tokenizer.encode_batch(train_docs), eot),
        val=token_data.concat(tokenizer.encode_batch(val_docs), eot),
        documents=len(train_docs) + len(val_docs),
        characters=sum(map(len, train_docs)) + sum(map(len, val_docs)),
        val_characters=sum(map(len, val_docs)),
        compressed={"lzma_bits_per_char": lzma_bits_per_char(train_docs, val_docs)},
    )


class SequenceRecipe(ABC):
    """Training step, evaluation and checkpoint state of a next-token model."""

    run: TrainConfig
    device: torch.device
    model: Any  # a next-token network: forward(x, y), generate(), context_limit
    optimizer: torch.optim.Optimizer
    batches: torch.Generator
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    window: int  # tokens per training window
    baseline: dict[str, float]
    #: Characters of held-out text (None for music): perplexities per token depend on the
    #: tokenizer, bits per character do not, so text runs report both.
    val_characters: int | None = None
    modality: str = "text"
    data_summary: dict[str, Any]
    #: what the tokens mean: a text tokenizer, or (melodies) an event vocabulary
    tokenizer: TextTokenizer | None = None
    vocabulary: EventVocabulary | None = None
    #: text only: the compressors' bits per character, baselines beside the n-gram's
    compressed: dict[str, float] | None = None

    def use_text(self, text: TextTokens) -> None:
        """Train on ``text``: its tokenizer, tokens and held-out measures."""
        self.tokenizer, self.train_tokens, self.val_tokens = text.tokenizer, text.train, text.val
        self.val_characters, self.compressed = text.val_characters, text.compressed

    def _setup_training(self, run: TrainConfig, *, vocab_size: int, window: int,
                        window_key: str) -> None:
        """After the subclass built `model`: check the data, make optimizer and sampler.

        ``window_key`` names the hyperparameter that sets ``window``, for the error a
        too-small data set gets.
        """
        for name, tokens in (("train", self.train_tokens), ("validation", self.val_tokens)):
            token_data.require_length(name, tokens, window + 1, window_key)
        self.window = window
        # Decoupled weight decay on matrices only (Loshchilov & Hutter 2019): decaying
        # biases, norms and recurrent gates' biases only hurts.
        params = list(self.model.parameters())
        self.optimizer = torch.optim.AdamW(
            [{"params": [p for p in params if p.dim() >= 2], "weight_decay": run.weight_decay},
             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
            lr=run.learning_rate, betas=(0.9, 0.95))
        self.batches = torch.Generator().manual_seed(run.seed)
        self.baseline = self._ngram_baselines(vocab_size)
        if self.val_characters:
            self.baseline.update(self.compressed or {})

    def _ngram_baselines(self, vocab_size: int) -> dict[str, float]:
        """The trigram's and the tuned 4-gram's held-out perplexity (and bits per
        character), on exactly the targets `evaluate` scores the model on."""
        targets = token_data.scored_targets(len(self.val_tokens), self.window,
                                            self.run.eval_batches * self.run.batch_size)
        out = {}
        for name, fit in (("ngram", ngram.trigram), ("ngram4", ngram.tuned)):
            nll = fit(self.train_tokens, vocab_size).nll(self.val_tokens)[targets - 1]
            out[f"{name}_perplexity"] = ngram.perplexity(nll)
            if self.val_characters:
                out[f"{name}_bits_per_char"] = self.bits_per_char(float(nll.mean()))
        return out

    def bits_per_char(self, nats_per_token: float) -> float:
        """A loss in nats per token as bits per character of the held-out text."""
        assert self.val_characters
        return nats_per_token / math.log(2) * len(self.val_tokens) / self.val_characters

    @abstractmethod
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ``model`` on inputs ``x`` and targets ``y``."""

    def continuations(self) -> list[tuple[list[Note], list[Note]]]:
        """Melodies only: held-out primers with the model's continuation of each."""
        return []

    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {"model": self.model, "optimizer": self.optimizer, "batches": self.batches}

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        x, y = token_data.windows(self.train_tokens, self.batches, self.run.batch_size,
                                  self.window, self.device,
                                  rows=distributed.current().part(self.run.batch_size))
        loss = self.loss(x, y)
        optimizer_step(self.optimizer, loss, lr=lr, grad_clip=self.run.grad_clip)
        return {"train_loss": loss.item(), "tokens": float(x.numel())}

    def evaluate(self) -> dict[str, float]:
        """Held-out loss and perplexity, beside the n-gram baseline's perplexity."""
        self.model.eval()
        out = token_data.held_out_loss(
            self.loss, self.val_tokens, batches=self.run.eval_batches,
            batch_size=self.run.batch_size, length=self.window, device=self.device)
        if self.val_characters:
            out["val_bits_per_char"] = self.bits_per_char(out["val_loss"])
        return {**out, **self.baseline}
