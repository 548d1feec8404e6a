"""Refinement: improve a trained model from people's judgements of its generations.

A training job with a `model` channel (the previous artifact: its folder or model.tar.gz)
and a `feedback` channel (the store's layout: generations/*.json, feedback/*.json; see
`training.feedback`) continues training the previous model on what people preferred:

- Transformer and RNN (text and melodies): Direct Preference Optimization (Rafailov et
  al. 2023) on the chosen/rejected pairs, the previous artifact frozen as the reference
  policy: loss = -log σ(β [(log π(y_c|x) - log π_ref(y_c|x)) - (log π(y_r|x) -
  log π_ref(y_r|x))]). Without pairs, fine-tuning on the well-rated outputs
  (rating >= min_rating; a preference's chosen output counts as well rated).
- GAN and VAE (generators of images): a small reward model is fit to the ratings (the
  judged PNGs themselves, so exactly what was rated; a preference counts as a 5 for the
  chosen and a 1 for the rejected image), and the generator is fine-tuned to raise the
  reward of its samples (a step at `reward_weight` times the learning rate), each beside a
  step of the family's own objective on training images, which keeps the distribution
  anchored to the data. Re-weighting the likelihood of the model's own samples was tried
  first and barely moves a generator: its own samples are already what it models best
  (a VAE's mean ink moved 2% in 100 steps; the reward moves it 14% in 40).
- RBM and autoencoder (no differentiable sampler): the family's own objective on batches
  of which `feedback_share` are images rated well, drawn in proportion to their rating,
  the rest training images. Poorly rated images are not used there: a likelihood or a
  reconstruction loss has no honest way to push away from one example.

A sequence model's step may add `anchor_weight` times the next-token loss on training
text, so preference learning does not wander off the data (held-out perplexity is
reported before and after). The refined artifact records its lineage in genkiln.json:
the parent's digest, how many pairs and ratings were used, and the metrics before.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training import checkpoint
from training.artifact import (
    MANIFEST,
    Artifact,
    artifact_sha256,
)
from training.contract import ChannelError
from training.data import tokens as token_data
from training.data.errors import DataError
from training.feedback import FeedbackError, FeedbackSet, GenerationRecord, read_feedback
from training.hyperparameters import require
from training.loop import optimizer_step
from training.rebuild import Rebuilt

#: Settings a refinement starts from, unless the job sets them: a short, gentle run.
#: The parent's time budget is not inherited: a refinement is budgeted by its own steps.
REFINE_DEFAULTS = {"max_steps": "60", "max_seconds": "0", "learning_rate": "0.0003",
                   "min_learning_rate": "0.0001", "warmup_steps": "5", "log_interval": "10",
                   "eval_interval": "1000000"}


@dataclass
class RefineConfig:
    dpo_beta: float = 0.1  # DPO's β: how far the refined policy may move from the reference
    min_rating: int = 4  # ratings at or above this count as well rated (1-5)
    anchor_weight: float = 0.2  # sequence models: weight of next-token loss on training text
    feedback_share: float = 0.5  # rbm, autoencoder: share of each batch from rated images
    reward_weight: float = 0.3  # gan, vae: rate of the reward step relative to the own loss's

    def validate(self) -> None:
        require(self.dpo_beta > 0, "dpo_beta", "must be positive")
        require(1 <= self.min_rating <= 5, "min_rating", "must be between 1 and 5")
        require(self.anchor_weight >= 0, "anchor_weight", "must be 0 or more")
        require(0 < self.feedback_share <= 1, "feedback_share", "must be in (0, 1]")
        require(self.reward_weight > 0, "reward_weight", "must be positive")


def find_artifact(channel: Path) -> Path:
    """The previous artifact in a `model` channel: its folder, or one model.tar.gz."""
    if (channel / MANIFEST).is_file():
        return channel
    archives = sorted(channel.rglob("*.tar.gz"))
    if len(archives) == 1:
        return archives[0]
    found = sorted(p for p in channel.rglob(MANIFEST))
    if len(found) == 1:
        return found[0].parent
    raise ChannelError(f"channel 'model' ({channel}) must hold one artifact: a folder with "
                       f"{MANIFEST} or one model.tar.gz; found {len(archives)} archives and "
                       f"{len(found)} manifests")


# --- sequences ------------------------------------------------------------------------
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

    def __init__(self, rebuilt: Rebuilt, feedback: FeedbackSet, cfg: RefineConfig,
                 log: Callable[[str], None]) -> None:
        self.recipe, self.run, self.cfg = rebuilt.recipe, rebuilt.run, cfg
        self.modality = getattr(self.recipe, "modality", "text")
        family = rebuilt.family.name
        self.pairs = [(self._encode(c), self._encode(r)) for c, r in feedback.preferences()
                      if c.family == family and r.family == family]
        self.pairs = [(c, r) for c, r in self.pairs if c[1] and r[1]]
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
            f"{len(getattr(self, 'liked', []))} well-rated outputs")

    def _encode(self, record: GenerationRecord) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) of a generation, in the model's vocabulary."""
        where = f"generations/{record.generation_id}.json"
        if self.modality == "text":
            text = record.output.get("text")
            prompt = record.inputs if isinstance(record.inputs, str) else None
            if not isinstance(text, str) or prompt is None:
                raise FeedbackError(f"{where}: a text generation needs a string 'inputs' and "
                                    f"output.text")
            return self.recipe.tokenizer.encode(prompt), self.recipe.tokenizer.encode(text)
        return self._encode_melody(record, where)

    def _encode_melody(self, record: GenerationRecord, where: str
                       ) -> tuple[list[int], list[int]]:
        from training.data.music import Note, parse_midi

        vocab = self.recipe.vocabulary
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
        return self.recipe._loss(x, y)

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


# --- images ---------------------------------------------------------------------------
class ImageRefinement:
    """The family's own objective on batches mixing well-rated images and training data."""

    def __init__(self, rebuilt: Rebuilt, feedback: FeedbackSet, cfg: RefineConfig,
                 log: Callable[[str], None]) -> None:
        self.recipe, self.run, self.cfg = rebuilt.recipe, rebuilt.run, cfg
        self.family = family = rebuilt.family.name
        weights: dict[str, float] = {}
        records: dict[str, GenerationRecord] = {}
        # Every judgement as a score per image, for a reward model: ratings as given, a
        # preference's chosen image 5 and its rejected image 1.
        scores: dict[str, float] = {}
        all_records: dict[str, GenerationRecord] = {}
        self.preferred: set[str] = set()
        for g, rating in feedback.ratings():
            if g.family == family:
                scores[g.generation_id] = float(rating)
                all_records[g.generation_id] = g
        for chosen_g, rejected_g in feedback.preferences():
            if chosen_g.family == family:
                for g, score in ((chosen_g, 5.0), (rejected_g, 1.0)):
                    scores[g.generation_id] = score
                    all_records[g.generation_id] = g
                    self.preferred.add(g.generation_id)
        for g, rating in feedback.ratings():
            if g.family == family and rating >= cfg.min_rating:
                weights[g.generation_id] = max(weights.get(g.generation_id, 0.0),
                                               float(rating - cfg.min_rating + 1))
                records[g.generation_id] = g
        self.ratings_used = len(weights)
        chosen = 0
        for g, _ in feedback.preferences():
            if g.family == family:
                weights[g.generation_id] = float(5 - cfg.min_rating + 1)
                records[g.generation_id] = g
                chosen += 1
        self.chosen_used = chosen
        if not weights and not scores:
            raise DataError(f"the feedback channel holds no ratings of {cfg.min_rating} or "
                            f"more and no preferences of {family} generations: nothing to "
                            f"refine on")
        for record in all_records.values():
            self._image(record)  # every judged image is checked, used or not
        images = [self._image(record) for record in records.values()]
        labels = [self._label(record) for record in records.values()]
        spec = self.recipe.spec
        shape = (0, spec.channels, spec.size, spec.size)
        self.x = (torch.from_numpy(np.stack(images)) if images else torch.zeros(shape)
                  ).to(self.recipe.device)  # (N, C, S, S)
        self.y = torch.tensor(labels, dtype=torch.long, device=self.recipe.device)
        if self.recipe.conditional:  # an unknown class: the feature classifier's guess
            unknown = self.y < 0
            if bool(unknown.any()) and self.recipe.features.labelled:
                guess = self.recipe.features.probabilities(self.x[unknown]).argmax(1)
                self.y[unknown] = guess.to(self.recipe.device)
            self.y = self.y.clamp(min=0)
        self.w = torch.tensor([weights[g] for g in records], dtype=torch.float)
        self.reward: torch.nn.Module | None = None
        self.noise = torch.Generator(device=self.recipe.device).manual_seed(self.run.seed + 5)
        if self.family in ("gan", "vae") and len(set(scores.values())) > 1:
            judged = torch.from_numpy(np.stack([self._image(all_records[g])
                                                for g in scores]))
            self.reward = fit_reward(judged, torch.tensor(list(scores.values())),
                                     seed=self.run.seed).to(self.recipe.device)
            self.method = "reward fine-tuning"
            self.ratings_used = sum(1 for g in scores if g not in self.preferred)
            log(f"refining by {self.method}: a reward model fit to {len(scores)} judged "
                f"images, weight {cfg.reward_weight:g}, beside the {self.family}'s own loss")
        else:
            if not records:
                raise DataError(f"the feedback channel holds no ratings of {cfg.min_rating} "
                                f"or more and no preferences of {family} generations: "
                                f"nothing to refine on")
            self._train_batch = self.recipe.batch
            self.recipe.batch = self._mixed_batch  # the family's train_step draws the mix
            self.method = "rating-weighted fine-tuning"
            log(f"refining by {self.method}: {len(records)} rated images "
                f"({self.ratings_used} ratings >= {cfg.min_rating}, {chosen} preferred), "
                f"{cfg.feedback_share:.0%} of each batch")

    def _image(self, record: GenerationRecord) -> np.ndarray:
        from training.evaluate import decode_png

        where = f"generations/{record.generation_id}.json"
        png = record.output.get("png_base64")
        if not isinstance(png, str):
            raise FeedbackError(f"{where}: an image generation needs output.png_base64")
        try:
            image = decode_png(base64.b64decode(png))
        except Exception as exc:  # PIL raises several kinds for a bad image
            raise FeedbackError(f"{where}: output.png_base64 is not a readable PNG "
                                f"({exc})") from None
        spec = self.recipe.spec
        if image.shape != (spec.channels, spec.size, spec.size):
            raise FeedbackError(f"{where}: the image is {tuple(image.shape)}; this model "
                                f"makes {(spec.channels, spec.size, spec.size)}")
        return image

    def _label(self, record: GenerationRecord) -> int:
        if not self.recipe.conditional:
            return -1  # a model without classes: a class in the request meant nothing
        classes = list(self.recipe.spec.classes)
        value = record.parameters.get("class")
        if value is None and isinstance(record.inputs, Mapping):
            value = record.inputs.get("class")
        if value is None:
            return -1
        if str(value) in classes:
            return classes.index(str(value))
        if isinstance(value, int) and 0 <= value < len(classes):
            return value
        raise FeedbackError(f"generations/{record.generation_id}.json: class {value!r} is "
                            f"not one of this model's classes {classes}")

    def _mixed_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = self._train_batch()
        n = max(1, round(len(x) * self.cfg.feedback_share))
        picks = torch.multinomial(self.w, n, replacement=True, generator=self.recipe.batches)
        picks = picks.to(self.recipe.device)
        x = torch.cat([x[n:], self.x[picks]]) if n < len(x) else self.x[picks]
        if y is not None:
            y = torch.cat([y[n:], self.y[picks]]) if n < len(y) else self.y[picks]
        return x, y

    def state_objects(self) -> dict[str, checkpoint.Stateful]:
        return {**self.recipe.state_objects(), "refine_noise": self.noise}

    def train_step(self, lr: float) -> dict[str, float]:
        out: dict[str, float] = self.recipe.train_step(lr)  # the family's own loss: the anchor
        if self.reward is None:
            return out
        recipe = self.recipe
        recipe.model.train()
        n = self.run.batch_size
        y = recipe.class_batch(n)
        if y is not None:
            y = y[torch.randperm(n, generator=recipe.batches).to(y.device)]
        if self.family == "gan":
            images = (recipe.model.generator(recipe.model.noise(n, recipe.noise_rng), y) + 1) / 2
            optimizer = recipe.g_opt
        else:
            z = torch.randn((n, recipe.model.latent_dim), generator=self.noise,
                            device=recipe.device)
            images = torch.sigmoid(recipe.model.decode(z, y))  # the decoder's mean images
            optimizer = recipe.optimizer
        reward = self.reward(images).mean()
        # A separate step, so the weight scales its rate: Adam ignores a loss's scale.
        optimizer_step(optimizer, -reward, lr=lr * self.cfg.reward_weight,
                       grad_clip=self.run.grad_clip)
        out["reward"] = reward.item()
        return out

    def evaluate(self) -> dict[str, float]:
        return self.recipe.evaluate()

    def lineage(self) -> dict[str, Any]:
        return {"method": self.method, "pairs": self.chosen_used, "ratings": self.ratings_used,
                "images": len(self.x) if self.reward is None else None,
                "settings": {"min_rating": self.cfg.min_rating,
                             "feedback_share": self.cfg.feedback_share,
                             "reward_weight": self.cfg.reward_weight}}


def fit_reward(images: torch.Tensor, scores: torch.Tensor, *, seed: int,
               steps: int = 300) -> torch.nn.Module:
    """A small MLP predicting the rating of an image from its pixels: the judge, learned.

    Scores 1-5 are mapped to [-1, 1]; the net is frozen once fit, so the generator is
    trained against it, never the other way round."""
    target = ((scores.float() - 3.0) / 2.0).unsqueeze(1)  # (N, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(images[0].numel(), 32),
                                  torch.nn.Tanh(), torch.nn.Linear(32, 1))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(steps):
            loss = F.mse_loss(net(images.float()), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def refinement_for(rebuilt: Rebuilt, feedback: FeedbackSet, cfg: RefineConfig,
                   log: Callable[[str], None]) -> SequenceRefinement | ImageRefinement:
    if rebuilt.family.name in ("transformer", "rnn"):
        return SequenceRefinement(rebuilt, feedback, cfg, log)
    return ImageRefinement(rebuilt, feedback, cfg, log)


def parent_lineage(parent: Artifact, refinement: SequenceRefinement | ImageRefinement,
                   feedback: FeedbackSet, before: Mapping[str, float]) -> dict[str, Any]:
    return {
        "parent_sha256": artifact_sha256(parent.directory),
        "parent_created_at": parent.manifest.get("created_at"),
        "parent_lineage": parent.manifest.get("lineage"),
        "feedback_records": len(feedback.feedback),
        "generations": len(feedback.generations),
        **refinement.lineage(),
        "metrics_before": dict(before),
    }


def read_feedback_channel(channel: Path) -> FeedbackSet:
    try:
        return read_feedback(channel)
    except FeedbackError as exc:
        raise DataError(str(exc)) from None
