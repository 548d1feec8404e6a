"""A recurrent sequence model (LSTM or GRU) for melodies and text.

Token embedding -> a stack of LSTM (Hochreiter & Schmidhuber 1997) or GRU (Cho et al.
2014) layers -> a linear head over the vocabulary, trained with next-token cross-entropy.
Decoding carries the recurrent state forward, so each new token costs one step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from training.artifact import Artifact, ArtifactError
from training.hyperparameters import require
from training.models.formats.notes import DURATIONS, EventVocabulary, Note
from training.models.formats.tokenizer import TOKENIZER_FILE, TextTokenizer
from training.models.sampling import SampledToken, apply_repetition_penalty, sample_next


@dataclass
class RNNConfig:
    cell: Literal["lstm", "gru"] = "lstm"  # recurrent cell type
    vocab_size: int = 2048  # text: BPE vocabulary trained on the data; music: fixed events
    seq_len: int = 128  # tokens per training window (truncated back-propagation)
    n_embd: int = 128  # token embedding width
    hidden_size: int = 384  # recurrent state width
    n_layer: int = 2  # stacked recurrent layers
    dropout: float = 0.1  # between layers and before the head
    max_context: int = 1024  # longest prompt + continuation served

    def validate(self) -> None:
        require(self.vocab_size >= 16, "vocab_size", "must be at least 16")
        require(self.seq_len >= 4, "seq_len", "must be at least 4")
        require(self.n_embd >= 1, "n_embd", "must be at least 1")
        require(self.hidden_size >= 1, "hidden_size", "must be at least 1")
        require(self.n_layer >= 1, "n_layer", "must be at least 1")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        require(self.max_context >= self.seq_len, "max_context", "must be at least seq_len")


State = tuple[torch.Tensor, torch.Tensor] | torch.Tensor


class SequenceRNN(nn.Module):
    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        rnn_cls = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(cfg.n_embd, cfg.hidden_size, num_layers=cfg.n_layer,
                           dropout=cfg.dropout if cfg.n_layer > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    @property
    def context_limit(self) -> int:
        return self.config.max_context

    def model_args(self) -> dict[str, object]:
        return asdict(self.config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                state: State | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        x = self.embed(idx)  # (B, T, n_embd)
        out, state = self.rnn(x, state)  # (B, T, hidden)
        logits = self.head(self.drop(out))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss, state

    @torch.inference_mode()
    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        generator: torch.Generator | None = None,
        allowed: Callable[[int], torch.Tensor | None] | None = None,
    ) -> Iterator[SampledToken]:
        """Yield tokens one at a time, carrying the recurrent state; stop iterating to stop.

        ``allowed(last_token)`` may return a boolean vocabulary mask: a grammar the
        continuation must follow (a duration after each pitch, say).
        """
        if not prompt:
            raise ValueError("prompt must hold at least one token")
        device = self.embed.weight.device
        seen = torch.tensor(list(prompt), device=device)
        logits, _, state = self(seen.view(1, -1))
        last = int(seen[-1])
        for _ in range(max_new_tokens):
            step = logits[0, -1].float()  # (vocab,)
            if repetition_penalty is not None and repetition_penalty != 1.0:
                step = apply_repetition_penalty(step, seen, repetition_penalty)
            token = sample_next(step, temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=generator,
                                allowed=allowed(last) if allowed is not None else None)
            yield token
            last = token.id
            if repetition_penalty is not None:
                seen = torch.cat([seen, torch.tensor([last], device=device)])
            logits, _, state = self(torch.tensor([[last]], device=device), state=state)


def grammar(vocab: EventVocabulary, device: torch.device | str = "cpu"
            ) -> Callable[[int], torch.Tensor]:
    """Masks that keep a melody well formed: a duration after each pitch or rest, and a
    pitch, rest or the end after each duration."""
    after_pitch = torch.zeros(vocab.size, dtype=torch.bool, device=device)
    after_pitch[vocab.duration_ids] = True
    after_duration = torch.zeros(vocab.size, dtype=torch.bool, device=device)
    after_duration[[*vocab.pitch_ids, vocab.end_id]] = True
    pitch_ids = set(vocab.pitch_ids)
    return lambda last: after_pitch if last in pitch_ids else after_duration


@dataclass(frozen=True)
class SequenceModel:
    """What serving needs: the network and its token codec, by modality."""

    model: SequenceRNN
    modality: str  # "music" or "text"
    vocabulary: EventVocabulary | None
    tokenizer: TextTokenizer | None
    artifact: Artifact


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu") -> SequenceModel:
    try:
        model = SequenceRNN(RNNConfig(**artifact.model_args))
        model.load_state_dict(artifact.tensors(device="cpu"))
    except (TypeError, RuntimeError) as exc:
        raise ArtifactError(f"{artifact.directory}: weights or model_args do not fit this "
                            f"genkiln's RNN ({exc})") from exc
    model.to(device).eval()
    if artifact.modality == "music":
        return SequenceModel(model, "music", EventVocabulary(), None, artifact)
    tokenizer = TextTokenizer.from_file(artifact.path(TOKENIZER_FILE))
    return SequenceModel(model, "text", None, tokenizer, artifact)


def continue_melody(model: SequenceRNN, vocab: EventVocabulary, primer: list[Note], *,
                    max_new_notes: int, temperature: float, top_k: int | None,
                    generator: torch.Generator | None,
                    quarters: float | None = None) -> list[Note]:
    """Continue ``primer`` by up to ``max_new_notes`` notes (fewer if the model ends it).

    With ``quarters``, the continuation may not end before it lasts that many quarter
    notes, and stops once it does (its last note may run past them)."""
    ids = vocab.encode(primer, close=False)
    rules = grammar(vocab, model.embed.weight.device)

    def allowed(last: int) -> torch.Tensor:
        mask = rules(last)
        if quarters is None or not mask[vocab.end_id]:
            return mask
        mask = mask.clone()
        mask[vocab.end_id] = False  # not as long as asked yet: no end marker
        return mask

    lengths = {i: d for i, d in zip(vocab.duration_ids, DURATIONS, strict=True)}
    out: list[int] = []
    elapsed = 0.0
    for token in model.generate(ids, max_new_tokens=2 * max_new_notes, temperature=temperature,
                                top_k=top_k, generator=generator, allowed=allowed):
        if token.id == vocab.end_id:
            break
        out.append(token.id)
        elapsed += lengths.get(token.id, 0.0)
        if quarters is not None and elapsed >= quarters:
            break
    return vocab.decode(out)


class RNNSlots:
    """Per-row recurrent state of an LSTM/GRU: (n_layer, slots, hidden) (h, and c for LSTM)."""

    def __init__(self, model: SequenceRNN, slots: int) -> None:
        cfg = model.config
        self.model, self.slots, self.active = model, slots, 0
        self.limit = cfg.max_context
        weight = model.embed.weight
        shape = (cfg.n_layer, slots, cfg.hidden_size)
        self.h = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.c = torch.zeros(shape, device=weight.device, dtype=weight.dtype) \
            if cfg.cell == "lstm" else None
        self.lengths = [0] * slots

    def room(self, row: int) -> int:
        return self.limit - self.lengths[row]

    def _state(self, rows: slice) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = self.h[:, rows].contiguous()
        return h if self.c is None else (h, self.c[:, rows].contiguous())

    def _keep(self, rows: slice, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
              ) -> None:
        if isinstance(state, tuple):
            assert self.c is not None
            self.h[:, rows], self.c[:, rows] = state
        else:
            self.h[:, rows] = state

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        assert 0 < len(prompts) <= self.slots - self.active, "no free row"
        logits = []
        for prompt in prompts:  # one at a time: a recurrence has no padding to hide
            row = self.active
            idx = torch.tensor([list(prompt)], device=self.h.device)  # (1, T)
            out, state = self.model.rnn(self.model.embed(idx))  # (1, T, hidden)
            self._keep(slice(row, row + 1), state)
            self.lengths[row] = len(prompt)
            self.active += 1
            logits.append(self.model.head(out[0, -1]))  # (vocab,)
        return torch.stack(logits)  # (n, vocab)

    @torch.inference_mode()
    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        B = self.active
        assert len(tokens) == B, "one token per active row"
        idx = torch.tensor(tokens, device=self.h.device).view(B, 1)
        out, state = self.model.rnn(self.model.embed(idx), self._state(slice(0, B)))
        self._keep(slice(0, B), state)
        for row in range(B):
            self.lengths[row] += 1
        return self.model.head(out[:, 0])  # (B, vocab)

    def remove(self, row: int) -> None:
        last = self.active - 1
        assert 0 <= row <= last, "no such row"
        if row != last:
            self.h[:, row] = self.h[:, last]
            if self.c is not None:
                self.c[:, row] = self.c[:, last]
            self.lengths[row] = self.lengths[last]
        self.lengths[last] = 0
        self.active = last
