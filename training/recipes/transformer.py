"""Training recipe of the Transformer language model: text -> tokens -> GPT -> artifact."""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from training.artifact import Artifact, ArtifactError, write_artifact
from training.config import TrainConfig
from training.data.errors import DataError
from training.data.folder import scan_folder
from training.data.text import TextCorpus, bundled_corpus, load_text_folder
from training.data.tokenizer import TextTokenizer
from training.models.transformer import GPT, TransformerConfig

FAMILY = "transformer"
TOKENIZER_FILE = "tokenizer.json"
_TIED = "lm_head.weight"  # tied to wte.weight: saved once, re-tied on load


def _tokens(tokenizer: TextTokenizer, documents: list[str]) -> np.ndarray:
    """Concatenate documents, each followed by <|endoftext|>, into one token array."""
    out: list[int] = []
    for ids in tokenizer.encode_batch(documents):
        out.extend(ids)
        out.append(tokenizer.eot_id)
    return np.asarray(out, dtype=np.int64)


def _split(corpus: TextCorpus, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = list(range(len(corpus.documents)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * fraction))
    if len(order) < 2:
        raise DataError(f"{corpus.source} holds one document; a held-out split needs at "
                        f"least two (add data or give a validation channel)")
    val = [corpus.documents[i] for i in order[:n_val]]
    train = [corpus.documents[i] for i in order[n_val:]]
    return train, val


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
            train_docs, val_docs = _split(corpus, run.val_fraction, run.seed)

        self.tokenizer = TextTokenizer.train(train_docs, vocab_size=model_cfg.vocab_size)
        self.train_tokens = _tokens(self.tokenizer, train_docs)
        self.val_tokens = _tokens(self.tokenizer, val_docs)
        need = model_cfg.block_size + 1
        for split, tokens in (("train", self.train_tokens), ("validation", self.val_tokens)):
            if len(tokens) < need:
                raise DataError(
                    f"the {split} split holds {len(tokens)} tokens, fewer than block_size + 1 "
                    f"({need}); add data, lower block_size, or raise val_fraction")

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
        log(f"model: {self.model.num_parameters():,} parameters; "
            f"data: {len(self.train_tokens):,} train / {len(self.val_tokens):,} held-out tokens")

    def _batch(self, tokens: np.ndarray, generator: torch.Generator,
               batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.model_cfg.block_size
        starts = torch.randint(len(tokens) - T, (batch_size,), generator=generator).numpy()
        window = np.stack([tokens[s:s + T + 1] for s in starts])  # (B, T+1)
        xy = torch.from_numpy(window).to(self.device)
        return xy[:, :-1], xy[:, 1:]  # (B, T) inputs and next-token targets

    def train_step(self, lr: float) -> dict[str, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self._batch(self.train_tokens, self.batches, self.run.batch_size)
        _, loss = self.model(x, y)
        assert loss is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.run.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.grad_clip)
        self.optimizer.step()
        return {"train_loss": loss.item(), "tokens": float(x.numel())}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean next-token loss on the held-out split, on the same windows every time."""
        self.model.eval()
        generator = torch.Generator().manual_seed(self.run.seed + 1)
        losses = []
        for _ in range(self.run.eval_batches):
            x, y = self._batch(self.val_tokens, generator, self.run.batch_size)
            _, loss = self.model(x, y)
            assert loss is not None
            losses.append(loss.item())
        val_loss = sum(losses) / len(losses)
        return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0))}

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
