"""Training recipe of the Transformer language model: text -> tokens -> GPT -> artifact."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from training import checkpoint
from training.artifact import Artifact, ArtifactError, write_artifact
from training.config import TrainConfig
from training.data import tokens as token_data
from training.data.folder import scan_folder
from training.data.text import bundled_corpus, load_text_folder
from training.data.tokenizer import TextTokenizer
from training.models.transformer import GPT, TransformerConfig
from training.ngram import ngram_perplexity

FAMILY = "transformer"
TOKENIZER_FILE = "tokenizer.json"
_TIED = "lm_head.weight"  # tied to wte.weight: saved once, re-tied on load


@dataclass(frozen=True)
class LanguageModel:
    """What serving needs: the network and its tokenizer, loaded from an artifact."""

    model: GPT
    tokenizer: TextTokenizer
    artifact: Artifact


def load(artifact: Artifact, device: str | torch.device = "cpu") -> LanguageModel:
    try:
        cfg = TransformerConfig(**artifact.model_args)
    except TypeError as exc:
        raise ArtifactError(f"{artifact.directory}: model_args do not fit this genkiln's "
                            f"Transformer ({exc})") from exc
    model = GPT(cfg)
    state = artifact.tensors(device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - {_TIED} or unexpected:
        raise ArtifactError(f"{artifact.directory}: weights do not match model_args "
                            f"(missing {sorted(set(missing) - {_TIED})}, unexpected "
                            f"{sorted(unexpected)})")
    model.to(device).eval()
    tokenizer = TextTokenizer.from_file(artifact.path(TOKENIZER_FILE))
    return LanguageModel(model=model, tokenizer=tokenizer, artifact=artifact)


class Recipe:
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
            log(f"train channel: {len(corpus.documents)} documents from {corpus.files} files")
        if validation_dir is not None:
            held_out = load_text_folder(scan_folder(validation_dir), text_key=run.text_key)
            train_docs, val_docs = corpus.documents, held_out.documents
        else:
            train_docs, val_docs = token_data.split(corpus.documents, run.val_fraction,
                                                    run.seed, corpus.source)

        self.tokenizer = TextTokenizer.train(train_docs, vocab_size=model_cfg.vocab_size)
        eot = self.tokenizer.eot_id
        self.train_tokens = token_data.concat(self.tokenizer.encode_batch(train_docs), eot)
        self.val_tokens = token_data.concat(self.tokenizer.encode_batch(val_docs), eot)
        for name, tokens in (("train", self.train_tokens), ("validation", self.val_tokens)):
            token_data.require_length(name, tokens, model_cfg.block_size + 1, "block_size")

        # The model's vocabulary is what the tokenizer really learned: on small data BPE
        # runs out of merges before reaching vocab_size.
        self.model_cfg = TransformerConfig(**{**asdict(model_cfg),
                                              "vocab_size": self.tokenizer.vocab_size})
        torch.manual_seed(run.seed)
        self.model = GPT(self.model_cfg).to(device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": run.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=run.learning_rate, betas=(0.9, 0.95),
        )
        self.batches = torch.Generator().manual_seed(run.seed)
        self.data_summary = {
            "source": corpus.source,
            "modality": "text",
            "files": corpus.files,
            "documents": len(train_docs) + len(val_docs),
            "characters": sum(map(len, train_docs)) + sum(map(len, val_docs)),
            "train_tokens": len(self.train_tokens),
            "validation_tokens": len(self.val_tokens),
            "vocab_size": self.tokenizer.vocab_size,
        }
        # The baseline a language model must beat, on the same held-out tokens.
        self.baseline = {"ngram_perplexity": ngram_perplexity(
            self.train_tokens, self.val_tokens, self.tokenizer.vocab_size)}
        log(f"model: {self.model.num_parameters():,} parameters; "
            f"data: {len(self.train_tokens):,} train / {len(self.val_tokens):,} held-out tokens; "
            f"trigram baseline perplexity {self.baseline['ngram_perplexity']:.1f}")

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = token_data.windows(self.train_tokens, self.batches, self.run.batch_size,
                                  self.model_cfg.block_size, self.device)
        _, loss = self.model(x, y)
        assert loss is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.run.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.grad_clip)
        self.optimizer.step()
        return {"train_loss": loss.item(), "tokens": float(x.numel())}

    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {"model": self.model, "optimizer": self.optimizer, "batches": self.batches}

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, loss = self.model(x, y)
        assert loss is not None
        return loss

    def evaluate(self) -> dict[str, float]:
        """Held-out loss and perplexity, beside the n-gram baseline's perplexity."""
        self.model.eval()
        return {**token_data.held_out_loss(
            self._loss, self.val_tokens, seed=self.run.seed, batches=self.run.eval_batches,
            batch_size=self.run.batch_size, length=self.model_cfg.block_size,
            device=self.device), **self.baseline}

    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        state = {k: v for k, v in self.model.state_dict().items() if k != _TIED}
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer_path = Path(tmp) / TOKENIZER_FILE
            self.tokenizer.save(tokenizer_path)
            write_artifact(
                directory, family=FAMILY, modality="text", config=config,
                model_args=asdict(self.model_cfg), tensors=state, data=self.data_summary,
                metrics=metrics, extra_files={TOKENIZER_FILE: tokenizer_path},
            )
