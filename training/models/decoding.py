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
from typing import Protocol, cast

import torch
import torch.nn.functional as F

from training.models.rnn import SequenceRNN
from training.models.transformer import GPT, Block


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


class GPTSlots:
    """Per-row KV cache of a GPT: (L, slots, nh, block_size, hs) keys and values."""

    def __init__(self, model: GPT, slots: int) -> None:
        cfg = model.config
        self.model, self.slots, self.active = model, slots, 0
        self.n_head, self.n_embd, self.block_size = cfg.n_head, cfg.n_embd, cfg.block_size
        weight = model.wte.weight
        shape = (cfg.n_layer, slots, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.v = torch.zeros(shape, device=weight.device, dtype=weight.dtype)
        self.lengths = [0] * slots  # positions filled in each row
        self.positions = torch.arange(cfg.block_size, device=weight.device)

    def room(self, row: int) -> int:
        return self.block_size - self.lengths[row]

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Every prompt in one forward pass, right-padded to the longest: row b's queries
        see its own keys up to themselves (causal) and none of its padding."""
        n = len(prompts)
        assert 0 < n <= self.slots - self.active, "no free row"
        lengths = [len(p) for p in prompts]
        assert min(lengths) > 0 and max(lengths) <= self.block_size, \
            "each prompt must fit the context"
        m, first, T = self.model, self.active, max(lengths)
        C, nh, device = self.n_embd, self.n_head, self.k.device
        idx = torch.tensor([[*p, *[0] * (T - len(p))] for p in prompts], device=device)
        length = torch.tensor(lengths, device=device)  # (n,)
        keys = self.positions[:T]
        mask = (keys[None, :] <= keys[:, None])[None] & (keys < length[:, None])[:, None, :]
        mask = mask[:, None]  # (n, 1, T, T): causal, and no padded key
        x = m.wte(idx) + m.wpe(keys)  # (n, T, C)
        for i, block in enumerate(cast(list[Block], m.h)):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q = q.view(n, T, nh, C // nh).transpose(1, 2)  # (n, nh, T, hs)
            k = k.view(n, T, nh, C // nh).transpose(1, 2)
            v = v.view(n, T, nh, C // nh).transpose(1, 2)
            self.k[i, first:first + n, :, :T] = k  # padding lands beyond each row's length
            self.v[i, first:first + n, :, :T] = v
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (n, nh, T, hs)
            x = x + attn.c_proj(y.transpose(1, 2).reshape(n, T, C))
            x = x + block.mlp(block.ln_2(x))
        self.lengths[first:first + n] = lengths
        self.active += n
        last = x[torch.arange(n, device=device), length - 1]  # (n, C): each prompt's end
        return m.lm_head(m.ln_f(last))  # (n, vocab)

    @torch.inference_mode()
    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        m, B, C, nh = self.model, self.active, self.n_embd, self.n_head
        assert len(tokens) == B, "one token per active row"
        lengths = self.lengths[:B]
        pos = torch.tensor(lengths, device=self.k.device)  # (B,) where each new token goes
        T = max(lengths) + 1  # keys to read: up to the longest row
        rows = torch.arange(B, device=pos.device)
        # Row b attends to its own positions 0..pos[b]; the rest of the window is padding
        # (none when every row is as long as the longest).
        mask = None if min(lengths) == T - 1 else \
            (self.positions[:T][None, :] <= pos[:, None])[:, None, None, :]  # (B,1,1,T)
        idx = torch.tensor(tokens, device=self.k.device).view(B, 1)
        x = m.wte(idx) + m.wpe(pos).unsqueeze(1)  # (B, 1, C)
        for i, block in enumerate(cast(list[Block], m.h)):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q = q.view(B, 1, nh, C // nh).transpose(1, 2)  # (B, nh, 1, hs)
            self.k[i, rows, :, pos] = k.view(B, nh, C // nh)
            self.v[i, rows, :, pos] = v.view(B, nh, C // nh)
            y = F.scaled_dot_product_attention(
                q, self.k[i, :B, :, :T], self.v[i, :B, :, :T], attn_mask=mask)  # (B,nh,1,hs)
            x = x + attn.c_proj(y.transpose(1, 2).reshape(B, 1, C))
            x = x + block.mlp(block.ln_2(x))
        self.lengths[:B] = [n + 1 for n in lengths]
        return m.lm_head(m.ln_f(x[:, 0]))  # (B, vocab)

    def remove(self, row: int) -> None:
        last = self.active - 1
        assert 0 <= row <= last, "no such row"
        if row != last:
            n = self.lengths[last]
            self.k[:, row, :, :n] = self.k[:, last, :, :n]
            self.v[:, row, :, :n] = self.v[:, last, :, :n]
            self.lengths[row] = n
        self.lengths[last] = 0
        self.active = last


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
