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

from training.hyperparameters import require
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
