"""Refining a sequence model (text, melodies): DPO on pairs, else fine-tuning on
well-rated outputs (see the package's docstring)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from training import checkpoint
from training.data import tokens as token_data
from training.data.errors import DataError
from training.feedback import FeedbackError, FeedbackSet, GenerationRecord
from training.loop import optimizer_step
from training.rebuild import Rebuilt
from training.recipes.sequence import SequenceRecipe
from training.refinement.config import RefineConfig


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023, eq. 7) from summed log-probabilities (B,); returns the
    mean loss and the implicit reward margins β(Δ_chosen - Δ_rejected) (B,)."""
    margins = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margins).mean(), margins.detach()


def _full_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from training.models.transformer import GPT

    if isinstance(model, GPT):
        logits, _ = model(x, x)  # with targets the GPT returns every position's logits
        return logits
    logits, _, _ = model(x)
    return logits


def sequence_logprob(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the masked targets: log π(completion | prompt), (B,)."""
    logp = F.log_softmax(_full_logits(model, x).float(), dim=-1)  # (B, T, V)
    picked = logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (picked * mask).sum(-1)


def _pad(rows: list[tuple[list[int], list[int]]], limit: int, device: torch.device
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt ids, completion ids) rows -> inputs, targets, completion mask (B, T)."""
    seqs, masks = [], []
    for prompt, completion in rows:
        ids = (prompt + completion)[-(limit + 1):]
        mask = ([0] * len(prompt) + [1] * len(completion))[-(limit + 1):]
        seqs.append(ids)
        masks.append(mask[1:])
    width = max(len(s) for s in seqs) - 1
    x = torch.zeros(len(seqs), width, dtype=torch.long)
    y = torch.zeros(len(seqs), width, dtype=torch.long)
    m = torch.zeros(len(seqs), width)
    for i, (ids, mask) in enumerate(zip(seqs, masks, strict=True)):
        n = len(ids) - 1
        x[i, :n] = torch.tensor(ids[:-1])
        y[i, :n] = torch.tensor(ids[1:])
        m[i, :n] = torch.tensor(mask, dtype=torch.float)
    return x.to(device), y.to(device), m.to(device)


class SequenceRefinement:
    """DPO on pairs, else fine-tuning on well-rated outputs, for a sequence recipe."""

    def __init__(self, recipe: SequenceRecipe, rebuilt: Rebuilt, feedback: FeedbackSet,
                 cfg: RefineConfig, log: Callable[[str], None]) -> None:
        self.recipe, self.run, self.cfg = recipe, rebuilt.run, cfg
        self.modality = recipe.modality
        family = rebuilt.family.name
        self.pairs = [(self._encode(c), self._encode(r)) for c, r in feedback.preferences()
                      if c.family == family and r.family == family]
        self.pairs = [(c, r) for c, r in self.pairs if c[1] and r[1]]
        self.liked: list[tuple[list[int], list[int]]] = []
        liked = {g.generation_id: g for g, rating in feedback.ratings()
                 if rating >= cfg.min_rating and g.family == family}
        self.ratings_used = len(liked)
        if not self.pairs:
            for chosen, _ in feedback.preferences():
                if chosen.family == family:
                    liked[chosen.generation_id] = chosen
            self.liked = [row for row in (self._encode(g) for g in liked.values()) if row[1]]
            if not self.liked:
                raise DataError(
                    f"the feedback channel holds no preference pairs and no ratings of "
                    f"{cfg.min_rating} or more of {family} generations: nothing to refine on")
            self.method = "fine-tuning on well-rated outputs"
        else:
            self.method = "dpo"
            self.ratings_used = 0
        self.limit = int(self.recipe.model.context_limit) if self.modality == "text" \
            else self.recipe.window
        self.rng = torch.Generator().manual_seed(self.run.seed + 11)
        if self.pairs:  # the frozen reference: the previous artifact's log-probabilities
            self.recipe.model.eval()
            with torch.no_grad():
                self.ref_chosen = self._logprob([c for c, _ in self.pairs])
                self.ref_rejected = self._logprob([r for _, r in self.pairs])
        log(f"refining by {self.method}: {len(self.pairs)} preference pairs, "
            f"{len(self.liked)} well-rated outputs")

    def _encode(self, record: GenerationRecord) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) of a generation, in the model's vocabulary."""
        where = f"generations/{record.generation_id}.json"
        if self.modality == "text":
            text = record.output.get("text")
            prompt = record.inputs if isinstance(record.inputs, str) else None
            if not isinstance(text, str) or prompt is None:
                raise FeedbackError(f"{where}: a text generation needs a string 'inputs' and "
                                    f"output.text")
            tokenizer = self.recipe.tokenizer
            assert tokenizer is not None  # text data
            return tokenizer.encode(prompt), tokenizer.encode(text)
        return self._encode_melody(record, where)

    def _encode_melody(self, record: GenerationRecord, where: str
                       ) -> tuple[list[int], list[int]]:
        from training.models.formats.midi import parse_midi
        from training.models.formats.notes import Note

        vocab = self.recipe.vocabulary
        assert vocab is not None  # melodies
        primer_raw = record.inputs.get("primer") if isinstance(record.inputs, Mapping) \
            else record.inputs
        midi = record.output.get("midi_base64")
        if not isinstance(primer_raw, list) or not isinstance(midi, str):
            raise FeedbackError(f"{where}: a melody generation needs the primer notes in "
                                f"'inputs' and output.midi_base64")
        try:
            primer = [Note(pitch=n.get("pitch"), duration=float(n["duration"]))
                      for n in primer_raw]
            notes = parse_midi(base64.b64decode(midi), where)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FeedbackError(f"{where}: unreadable primer or MIDI ({exc})") from None
        return (vocab.encode(primer, close=False),
                vocab.encode(notes[len(primer):], close=False))

    def _logprob(self, rows: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        x, y, m = _pad(rows, self.limit, self.recipe.device)
        return sequence_logprob(self.recipe.model, x, y, m)

    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {**self.recipe.state_objects(), "refine_batches": self.rng}

    def _anchor(self) -> torch.Tensor:
        x, y = token_data.windows(self.recipe.train_tokens, self.recipe.batches,
                                  self.run.batch_size, self.recipe.window, self.recipe.device)
        return self.recipe.loss(x, y)

    def train_step(self, lr: float) -> dict[str, float]:
        model = self.recipe.model
        model.train()
        n = len(self.pairs) if self.pairs else len(self.liked)
        idx = torch.randint(n, (min(self.run.batch_size, n),), generator=self.rng).tolist()
        out: dict[str, float] = {}
        if self.pairs:
            rows = [self.pairs[i][0] for i in idx] + [self.pairs[i][1] for i in idx]
            out["tokens"] = float(sum(len(p) + len(c) for p, c in rows))
            chosen = self._logprob([self.pairs[i][0] for i in idx])
            rejected = self._logprob([self.pairs[i][1] for i in idx])
            loss, margins = dpo_loss(chosen, rejected, self.ref_chosen[idx],
                                     self.ref_rejected[idx], self.cfg.dpo_beta)
            out.update(dpo_loss=loss.item(), reward_margin=float(margins.mean()),
                       reward_accuracy=float((margins > 0).float().mean()))
        else:
            x, y, m = _pad([self.liked[i] for i in idx], self.limit, self.recipe.device)
            out["tokens"] = float(x.numel())
            loss = -(sequence_logprob(model, x, y, m) / m.sum(-1).clamp(min=1)).mean()
            out["sft_loss"] = loss.item()
        if self.cfg.anchor_weight > 0:
            anchor = self._anchor()
            loss = loss + self.cfg.anchor_weight * anchor
            out["train_loss"] = anchor.item()
            out["tokens"] += self.run.batch_size * self.recipe.window
        optimizer_step(self.recipe.optimizer, loss, lr=lr, grad_clip=self.run.grad_clip)
        return out

    def evaluate(self) -> dict[str, float]:
        return self.recipe.evaluate()

    def lineage(self) -> dict[str, Any]:
        return {"method": self.method, "pairs": len(self.pairs),
                "ratings": self.ratings_used,
                "settings": {"dpo_beta": self.cfg.dpo_beta, "min_rating": self.cfg.min_rating,
                             "anchor_weight": self.cfg.anchor_weight}}


