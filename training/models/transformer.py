"""A GPT-style decoder-only Transformer language model.

The architecture follows GPT-2 (Radford et al. 2019) as nanoGPT writes it: token and
learned position embeddings, pre-LayerNorm blocks of causal self-attention and an MLP,
and an output head tied to the token embedding (Press & Wolf 2017).

The attention step is written twice: in `CausalSelfAttention.forward`, the training form
over whole sequences, and in `GPTSlots`, the serving form, which decodes many sequences
at once (each at its own position) through a key/value cache, so each new token costs one
position of work, not the whole prefix. `GPT.generate` is that decoder with one row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from training.artifact import Artifact, ArtifactError
from training.hyperparameters import require
from training.models.formats.tokenizer import TOKENIZER_FILE, TextTokenizer
from training.models.sampling import SampledToken, apply_repetition_penalty, sample_next


@dataclass
class TransformerConfig:
    vocab_size: int = 2048  # size of the byte-level BPE vocabulary trained on the data
    block_size: int = 128  # context length in tokens: prompt + generated tokens
    n_layer: int = 4  # number of Transformer blocks
    n_head: int = 4  # attention heads per block; must divide n_embd
    n_embd: int = 128  # width of the residual stream
    dropout: float = 0.0  # dropout in attention and MLP (0 for small data / short runs)
    bias: bool = False  # biases in Linear and LayerNorm layers (GPT-2 had them)

    def validate(self) -> None:
        require(self.vocab_size >= 257, "vocab_size", "must be at least 257 (256 bytes + 1)")
        require(self.block_size >= 8, "block_size", "must be at least 8")
        require(self.n_layer >= 1, "n_layer", "must be at least 1")
        require(self.n_head >= 1, "n_head", "must be at least 1")
        require(self.n_embd % self.n_head == 0, "n_embd",
                f"({self.n_embd}) must be divisible by n_head ({self.n_head})")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every position attends to itself and those before it (the training form; the
        serving form, with a key/value cache, is `GPTSlots`)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections: keeps the residual stream's
        # variance from growing with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def context_limit(self) -> int:
        """Longest prompt + continuation this model can serve."""
        return self.config.block_size

    def model_args(self) -> dict[str, object]:
        return asdict(self.config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.shape[1]
        if self.config.block_size < T:
            raise ValueError(f"sequence of {T} tokens exceeds block_size "
                             f"{self.config.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None  # (B, 1, vocab): the next token's
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

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
    ) -> Iterator[SampledToken]:
        """Yield sampled tokens one at a time; stop iterating to stop generating.

        ``temperature`` 0 means greedy decoding. ``generator`` makes sampling
        reproducible and independent of any other request's randomness.
        """
        if not prompt:
            raise ValueError("prompt must hold at least one token")
        if len(prompt) + max_new_tokens > self.config.block_size:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_new_tokens "
                             f"({max_new_tokens}) exceeds block_size {self.config.block_size}")
        decoder = GPTSlots(self, 1)  # one sequence: the serving decoder with one row
        penalised = repetition_penalty is not None and repetition_penalty != 1.0
        seen = torch.tensor(list(prompt), device=self.wte.weight.device)
        logits = decoder.prefill([prompt])  # (1, vocab): the whole prompt in one pass
        for n in range(max_new_tokens):
            row = logits[0].float()  # (vocab,)
            if penalised:
                assert repetition_penalty is not None
                row = apply_repetition_penalty(row, seen, repetition_penalty)
            token = sample_next(row, temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=generator)
            yield token
            if penalised:  # only the penalty needs the history
                seen = torch.cat([seen, torch.tensor([token.id], device=seen.device)])
            if n + 1 < max_new_tokens:
                logits = decoder.step([token.id])


class GPTSlots:
    """The serving form of a GPT: up to ``slots`` sequences decoded together, each at its
    own position, through one key/value cache of (L, slots, nh, block_size, hs) (the
    model side of continuous batching; see training.models.decoding.SlotDecoder)."""

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
        """Every prompt in one forward pass into the next free rows, right-padded to the
        longest; each prompt's next-token logits (n, vocab)."""
        n = len(prompts)
        assert 0 < n <= self.slots - self.active, "no free row"
        lengths = [len(p) for p in prompts]
        assert min(lengths) > 0 and max(lengths) <= self.block_size, \
            "each prompt must fit the context"
        T, first = max(lengths), self.active
        idx = torch.tensor([[*p, *[0] * (T - len(p))] for p in prompts], device=self.k.device)
        x = self._forward(idx, slice(first, first + n), start=0, width=T)
        self.lengths[first:first + n] = lengths
        self.active += n
        end = torch.tensor(lengths, device=x.device) - 1
        m = self.model
        return m.lm_head(m.ln_f(x[torch.arange(n, device=x.device), end]))  # (n, vocab)

    @torch.inference_mode()
    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """One token for each active row; the next-token logits (active, vocab)."""
        B = self.active
        assert len(tokens) == B, "one token per active row"
        lengths = self.lengths[:B]
        idx = torch.tensor(tokens, device=self.k.device).view(B, 1)
        if min(lengths) == max(lengths):  # every row at one position: no key to hide
            x = self._forward(idx, slice(0, B), start=lengths[0], width=lengths[0] + 1)
        else:
            x = self._forward(idx, slice(0, B), width=max(lengths) + 1,
                              ragged=torch.tensor(lengths, device=self.k.device))
        self.lengths[:B] = [n + 1 for n in lengths]
        m = self.model
        return m.lm_head(m.ln_f(x[:, 0]))  # (B, vocab)

    def _forward(self, idx: torch.Tensor, rows: slice, *, width: int, start: int = 0,
                 ragged: torch.Tensor | None = None) -> torch.Tensor:
        """The blocks over new tokens ``idx`` (n, T) of cache rows ``rows``: each token's
        key and value go into its row of the cache, and each query attends to its row's
        keys up to its own position. The new tokens sit at positions start..start+T-1 of
        every row, or (one token a row) at ``ragged`` (n,), each row's own length, where a
        mask hides the keys a shorter row has not filled; ``width`` keys are read."""
        m, C, nh = self.model, self.n_embd, self.n_head
        n, T = idx.shape
        hs = C // nh
        if ragged is None:
            x = m.wte(idx) + m.wpe.weight[start:start + T]  # (n, T, C)
            mask = None
        else:
            x = m.wte(idx) + m.wpe(ragged)[:, None]  # (n, 1, C)
            mask = (self.positions[:width][None, :] <= ragged[:, None])[:, None, None]
            row = torch.arange(rows.start, rows.stop, device=idx.device)  # (n,)
        for i, block in enumerate(cast(list[Block], m.h)):
            attn, mlp = block.attn, block.mlp
            qkv = attn.c_attn(block.ln_1(x)).view(n, T, 3, nh, hs)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (n, nh, T, hs) each
            if ragged is None:
                self.k[i, rows, :, start:start + T] = k  # padding lands past each length
                self.v[i, rows, :, start:start + T] = v
            else:
                self.k[i, row, :, ragged] = k[:, :, 0]
                self.v[i, row, :, ragged] = v[:, :, 0]
            y = F.scaled_dot_product_attention(  # (n, nh, T, hs)
                q, self.k[i, rows, :, :width], self.v[i, rows, :, :width], attn_mask=mask,
                is_causal=T > 1)
            # One position: (n, nh, 1, hs) already lies in memory as (n, 1, C).
            y = y.view(n, 1, C) if T == 1 else y.transpose(1, 2).reshape(n, T, C)
            x = x + attn.c_proj(y)
            x = x + mlp.c_proj(F.gelu(mlp.c_fc(block.ln_2(x))))  # no dropout: serving
        return x

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


TIED_HEAD = "lm_head.weight"  # tied to wte.weight: saved once, re-tied on load


@dataclass(frozen=True)
class LanguageModel:
    """What serving needs: the network and its tokenizer, loaded from an artifact."""

    model: GPT
    tokenizer: TextTokenizer
    artifact: Artifact


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu") -> LanguageModel:
    try:
        cfg = TransformerConfig(**artifact.model_args)
    except TypeError as exc:
        raise ArtifactError(f"{artifact.directory}: model_args do not fit this genkiln's "
                            f"Transformer ({exc})") from exc
    model = GPT(cfg)
    state = artifact.tensors(device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - {TIED_HEAD} or unexpected:
        raise ArtifactError(f"{artifact.directory}: weights do not match model_args "
                            f"(missing {sorted(set(missing) - {TIED_HEAD})}, unexpected "
                            f"{sorted(unexpected)})")
    model.to(device).eval()
    tokenizer = TextTokenizer.from_file(artifact.path(TOKENIZER_FILE))
    return LanguageModel(model=model, tokenizer=tokenizer, artifact=artifact)
