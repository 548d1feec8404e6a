"""A GPT-style decoder-only Transformer language model.

The architecture follows GPT-2 (Radford et al. 2019) as nanoGPT writes it: token and
learned position embeddings, pre-LayerNorm blocks of causal self-attention and an MLP,
and an output head tied to the token embedding (Press & Wolf 2017). Decoding keeps a
key/value cache so each new token costs one position of work, not the whole prefix.
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


class KVCache:
    """Keys and values of every layer for positions already seen, preallocated."""

    def __init__(self, cfg: TransformerConfig, batch: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        hs = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.block_size, hs)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nh, Tmax, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        else:
            start = cache.length
            cache.k[layer, :, :, start:start + T] = k
            cache.v[layer, :, :, start:start + T] = v
            k = cache.k[layer, :, :, :start + T]  # (B, nh, start+T, hs)
            v = cache.v[layer, :, :, :start + T]
            # Prefill (start 0) is causal over the prompt; a single new query may
            # attend to every cached position, so it needs no mask.
            assert start == 0 or T == 1, "cached decoding feeds one token at a time"
            y = F.scaled_dot_product_attention(q, k, v, is_causal=(start == 0 and T > 1))
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

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
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

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size "
                             f"{self.config.block_size}")
        if cache is not None and T == 1 and not self.training:
            return self._decode_one(idx, cache), None
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += T
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None  # (B, 1, vocab): only what decoding needs
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _decode_one(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token per row through the cache: the forward pass above, written for
        a single position, where every operator saved is a visible share of the step
        (no dropout calls, no transposes: with one position, (B, 1, nh, hs) and
        (B, nh, 1, hs) share a memory layout)."""
        cfg = self.config
        B, p, C, nh = idx.shape[0], cache.length, cfg.n_embd, cfg.n_head
        x = self.wte(idx) + self.wpe.weight[p]  # (B, 1, C)
        for i, block in enumerate(cast(list[Block], self.h)):
            attn, mlp = block.attn, block.mlp
            qkv = attn.c_attn(block.ln_1(x)).view(B, 3, nh, 1, C // nh)
            cache.k[i, :, :, p] = qkv[:, 1, :, 0]
            cache.v[i, :, :, p] = qkv[:, 2, :, 0]
            y = F.scaled_dot_product_attention(  # (B, nh, 1, hs)
                qkv[:, 0], cache.k[i, :, :, :p + 1], cache.v[i, :, :, :p + 1])
            x = x + attn.c_proj(y.view(B, 1, C))
            x = x + mlp.c_proj(F.gelu(mlp.c_fc(block.ln_2(x))))
        cache.length += 1
        return self.lm_head(self.ln_f(x))  # (B, 1, vocab)

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
        device = self.wte.weight.device
        cache = KVCache(self.config, 1, device, self.wte.weight.dtype)
        penalised = repetition_penalty is not None and repetition_penalty != 1.0
        seen = torch.tensor(list(prompt), device=device)
        idx = seen.view(1, -1)  # (1, T): the whole prompt in one prefill pass
        for _ in range(max_new_tokens):
            logits, _ = self(idx, cache=cache)
            logits = logits[0, -1].float()  # (vocab,)
            if penalised:
                assert repetition_penalty is not None
                logits = apply_repetition_penalty(logits, seen, repetition_penalty)
            token = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=generator)
            yield token
            if penalised:  # only the penalty needs the history
                seen = torch.cat([seen, torch.tensor([token.id], device=device)])
            idx = torch.tensor([[token.id]], device=device)  # (1, 1)


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
