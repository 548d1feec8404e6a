"""Decoding many sequences at once, each at its own position: the model side of
continuous batching.

A slot decoder holds the decode state (a Transformer's key/value cache, an RNN's carried
state) of up to ``slots`` sequences in rows 0..active-1 of preallocated tensors. A new
sequence is prefilled into the next free row; `step` feeds one token to every active row
in one batched forward pass; `remove` frees a row by moving the last row into it, so the
active rows stay contiguous and attention reads views of the cache, never gathered copies.

Sequences join and leave between steps; none waits for another to finish (Yu et al.
2022, "Orca", iteration-level scheduling). Each row of the Transformer's cache keeps its
own length, and a padding mask hides the positions a shorter row has not filled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from training.models.rnn import RNNSlots, SequenceRNN
from training.models.transformer import GPT, GPTSlots


class SlotDecoder(Protocol):
    slots: int  # rows available
    active: int  # rows in use: 0..active-1

    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Put n sequences in rows active..active+n-1 (then active += n), in one pass
        where the model allows; their next-token logits (n, vocab)."""
        ...

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed tokens[i] to row i of every active row; next-token logits (active, vocab)."""
        ...

    def remove(self, row: int) -> None:
        """Free ``row``; the last active row moves into it."""
        ...

    def room(self, row: int) -> int:
        """Tokens row ``row`` can still take before the model's context is full."""
        ...


def slot_decoder(model: torch.nn.Module, slots: int) -> SlotDecoder:
    """The slot decoder of a GPT or a SequenceRNN."""
    if isinstance(model, GPT):
        return GPTSlots(model, slots)
    if isinstance(model, SequenceRNN):
        return RNNSlots(model, slots)
    raise TypeError(f"no slot decoder for {type(model).__name__}")


def serving_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model with its serving weights: "fp32" as trained, "bf16" (every weight in
    bfloat16), or "int8" (Linear weights quantized to int8 per output channel, activations
    quantized on the fly: PyTorch's dynamic quantization, Jacob et al. 2018)."""
    if precision == "fp32":
        return model
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"precision must be fp32, bf16 or int8, not {precision!r}")
