"""Training recipe of the Transformer language model: text -> tokens -> GPT -> artifact."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from training.artifact import write_artifact
from training.config import TrainConfig
from training.data.folder import scan_folder
from training.data.text import bundled_corpus, load_text_folder
from training.models.formats.chat_template import CHAT_TEMPLATE_FILE, write_chat_template
from training.models.formats.tokenizer import TOKENIZER_FILE, TextTokenizer
from training.models.transformer import GPT, TIED_HEAD, TransformerConfig
from training.recipes.sequence import SequenceRecipe, tokenize_text

FAMILY = "transformer"


class Recipe(SequenceRecipe):
    tokenizer: TextTokenizer

    def __init__(
        self,
        run: TrainConfig,
        model_cfg: TransformerConfig,
        *,
        train_dir: Path | None,
        validation_dir: Path | None,
        device: torch.device,
        log: Callable[[str], None] = print,
    ) -> None:
        self.run = run
        self.device = device
        if train_dir is None:
            corpus = bundled_corpus()
            log(f"no train channel: using the {corpus.source}")
        else:
            corpus = load_text_folder(scan_folder(train_dir), text_key=run.text_key)
            log(f"train channel: {len(corpus.documents)} documents from {corpus.files} files"
                + (f"; {corpus.note}" if corpus.note else ""))
        text = tokenize_text(corpus, run, validation_dir=validation_dir,
                             vocab_size=model_cfg.vocab_size)
        self.use_text(text)
        # The model's vocabulary is what the tokenizer really learned: on small data BPE
        # runs out of merges before reaching vocab_size.
        self.model_cfg = TransformerConfig(**{**asdict(model_cfg),
                                              "vocab_size": self.tokenizer.vocab_size})
        torch.manual_seed(run.seed)
        self.model: GPT = GPT(self.model_cfg).to(device)
        self._setup_training(run, vocab_size=self.tokenizer.vocab_size,
                             window=self.model_cfg.block_size, window_key="block_size")
        self.data_summary = {
            "source": corpus.source,
            "modality": "text",
            "files": corpus.files,
            "documents": text.documents,
            "characters": text.characters,
            "train_tokens": len(self.train_tokens),
            "validation_tokens": len(self.val_tokens),
            "vocab_size": self.tokenizer.vocab_size,
        }
        log(f"model: {self.model.num_parameters():,} parameters; "
            f"data: {len(self.train_tokens):,} train / {len(self.val_tokens):,} held-out tokens; "
            f"baseline perplexity: trigram {self.baseline['ngram_perplexity']:.1f}, tuned "
            f"4-gram {self.baseline['ngram4_perplexity']:.1f}")

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, loss = self.model(x, y)
        assert loss is not None
        return loss

    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        state = {k: v for k, v in self.model.state_dict().items() if k != TIED_HEAD}
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer_path = Path(tmp) / TOKENIZER_FILE
            self.tokenizer.save(tokenizer_path)
            write_artifact(
                directory, family=FAMILY, modality="text", config=config,
                model_args=asdict(self.model_cfg), tensors=state, data=self.data_summary,
                metrics=metrics, extra_files={TOKENIZER_FILE: tokenizer_path,
                                              CHAT_TEMPLATE_FILE: write_chat_template(
                                                  Path(tmp))},
            )
