"""Transformer decode speed, side by side with Hugging Face transformers' GPT-2 of the same
shape, beside the machine's physical bound (issue 6, benchmarks 1 and 5).

    python bench/transformer.py [--quick] [--rounds 5] [--threads N]

- Numerics: HF's random GPT-2 weights copied into genkiln's GPT; full-sequence logits
  compared (max |difference|; must be within 1e-4).
- Batch-1 greedy decode tokens/s with the KV cache on both sides, measured interleaved in
  one process (genkiln fp32, HF, genkiln int8, genkiln bf16, ...), median of the rounds,
  each as a ratio to HF and as a fraction of the memory-bandwidth bound (weight bytes
  read per token ÷ measured bandwidth).
- Serving precision: held-out perplexity of a Transformer trained here for a few hundred
  steps on the bundled corpus, in fp32, bf16 and int8; the fastest precision within 1 %
  of fp32's perplexity is the "fastest serving precision" row.
- Training tokens/s against HF (full mode only), as before.
Random weights, no download: the HF model is built from a GPT2Config.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from typing import Any

import torch

from bench.machine import Report, interleaved, matmul_flops, memory_bandwidth
from training.models.decoding import serving_precision
from training.models.transformer import GPT, TransformerConfig

#: The issue's shape: 6 layers, 8 heads, width 512, vocabulary 8,192.
SHAPE = dict(vocab_size=8192, block_size=256, n_layer=6, n_head=8, n_embd=512)
#: What `make run` trains: the shape whose perplexity the precisions are judged on.
DEMO = dict(vocab_size=2048, block_size=128, n_layer=4, n_head=4, n_embd=128)
PROMPT_TOKENS = 8
NEW_TOKENS = 100


def hf_model(shape: dict[str, int]) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=shape["vocab_size"], n_positions=shape["block_size"],
                     n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     activation_function="gelu", attn_implementation="sdpa",
                     bos_token_id=None, eos_token_id=None, loss_type="ForCausalLM")
    return GPT2LMHeadModel(cfg).eval()


def copy_of(hf: Any, shape: dict[str, int]) -> GPT:
    """genkiln's GPT with HF's weights (HF's Conv1D keeps them transposed)."""
    ours = GPT(TransformerConfig(**shape, dropout=0.0, bias=True)).eval()
    theirs = hf.state_dict()
    state = {}
    for name in ours.state_dict():
        source = theirs["lm_head.weight" if name == "lm_head.weight" else f"transformer.{name}"]
        conv = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        state[name] = source.t() if conv else source
    ours.load_state_dict(state)
    return ours


def max_logit_difference(ours: GPT, hf: Any, vocab: int) -> float:
    x = torch.randint(0, vocab, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, _ = ours(x, x)  # with targets: logits at every position
        b = hf(input_ids=x).logits
    return float((a - b).abs().max())


def decode_rate(model: Any, hf: bool, vocab: int) -> float:
    prompt = torch.randint(0, vocab, (1, PROMPT_TOKENS))
    started = time.perf_counter()
    if hf:
        with torch.inference_mode():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                 max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                 do_sample=False, use_cache=True, pad_token_id=0)
        produced = out.shape[1] - PROMPT_TOKENS
    else:
        produced = sum(1 for _ in model.generate(prompt[0].tolist(), max_new_tokens=NEW_TOKENS,
                                                 temperature=0.0))
    assert produced == NEW_TOKENS
    return produced / (time.perf_counter() - started)


def linear_only_rate(model: torch.nn.Module, rounds: int = 50) -> float:
    """Tokens/s if a batch-1 decode step were its Linear layers alone (every matrix once,
    the head included, nothing else): the ceiling of eager PyTorch's matrix-vector
    kernels on this machine, whatever the Python around them costs."""
    layers = [m for m in model.modules() if hasattr(m, "in_features")]
    # The model's float type (int8 Linear layers take float activations too).
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    inputs = [torch.randn(1, 1, layer.in_features, dtype=dtype) for layer in layers]

    def once() -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            for _ in range(rounds):
                for layer, x in zip(layers, inputs, strict=True):
                    layer(x)
            return rounds / (time.perf_counter() - started)

    once()
    return max(once() for _ in range(3))


def bytes_per_token(model: torch.nn.Module, matrix_bytes: int | None = None) -> int:
    """Weight bytes one batch-1 decode step reads: every matrix (the tied head once) and
    norm once, one row of the position table. ``matrix_bytes`` overrides the element size
    of 2-D weights (1 for int8, whose quantized Linear layers hide their weights)."""
    total = 0
    for name, p in model.named_parameters():  # a tied weight is listed once
        if "wpe" in name:
            total += p.shape[1] * p.element_size()
        elif p.dim() == 2 and matrix_bytes is not None:
            total += p.numel() * matrix_bytes
        else:
            total += p.numel() * p.element_size()
    return total


def flops_per_token(shape: dict[str, int], context: int) -> float:
    """2 FLOPs per matrix weight (the head included) plus attention over ``context``."""
    C, L = shape["n_embd"], shape["n_layer"]
    matrices = L * 12 * C * C + shape["vocab_size"] * C
    return 2.0 * matrices + 4.0 * L * context * C


def perplexities(steps: int) -> dict[str, float]:
    """Held-out perplexity of a demo-shape Transformer trained for ``steps`` steps on the
    bundled corpus, served in each precision."""
    from training.config import TrainConfig
    from training.recipes.transformer import Recipe

    run = TrainConfig(max_steps=steps, batch_size=16, eval_batches=20, learning_rate=3e-3)
    recipe = Recipe(run, TransformerConfig(**DEMO), train_dir=None, validation_dir=None,
                    device=torch.device("cpu"), log=lambda line: None)
    for step in range(steps):
        warm = min(1.0, (step + 1) / 20)
        cosine = 0.5 * (1 + math.cos(math.pi * step / steps))
        recipe.train_step(3e-3 * warm * (0.1 + 0.9 * cosine))
    trained = recipe.model.eval()
    out = {}
    for precision in ("fp32", "bf16", "int8"):
        recipe.model = serving_precision(copy.deepcopy(trained), precision)
        with torch.inference_mode():
            out[precision] = recipe.evaluate()["val_perplexity"]
    recipe.model = trained
    return out


def train_rate(model: torch.nn.Module, hf: bool, batch: int, block: int, vocab: int) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (batch, block))
    started = time.perf_counter()
    for _ in range(2):
        loss = model(input_ids=x, labels=x).loss if hf else model(x, x)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return batch * block * 2 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and training steps (a minute or two)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--perplexity-steps", type=int, default=None,
                        help="training steps of the model the precisions are judged on "
                             "(0: skip; every reduced precision then counts as unproven)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    torch.set_num_threads(args.threads)
    report = Report("transformer", "transformer decode bench (issue 6: 1 and 5)")

    bandwidth, flops = memory_bandwidth(), matmul_flops()
    report.add(f"machine bound: memory bandwidth {bandwidth / 1e9:.1f} GB/s (copy), "
               f"fp32 matmul {flops / 1e9:.1f} GFLOP/s (1024x1024), {args.threads} threads")

    torch.manual_seed(0)
    hf = hf_model(SHAPE)
    ours = copy_of(hf, SHAPE)
    difference = max_logit_difference(ours, hf, SHAPE["vocab_size"])
    report.add(f"logits vs HF GPT-2 (same weights, 2x64 tokens): max |diff| {difference:.2e} "
               f"({'within' if difference <= 1e-4 else 'OUTSIDE'} 1e-4)")

    steps = args.perplexity_steps if args.perplexity_steps is not None else \
        (60 if args.quick else 400)
    ppl = perplexities(steps) if steps else \
        {"fp32": 1.0, "bf16": float("inf"), "int8": float("inf")}
    report.add(f"held-out perplexity, demo shape trained {steps} steps on the bundled corpus: "
               + ", ".join(f"{p} {v:.3f} ({100 * (v / ppl['fp32'] - 1):+.2f} %)"
                           for p, v in ppl.items()))

    variants = {"fp32": ours, "int8": serving_precision(copy.deepcopy(ours), "int8"),
                "bf16": serving_precision(copy.deepcopy(ours), "bf16")}
    names = list(variants)
    vocab = SHAPE["vocab_size"]
    rates = interleaved(rounds, lambda: decode_rate(hf, True, vocab),
                        *[lambda m=m: decode_rate(m, False, vocab)  # type: ignore[misc]
                          for m in variants.values()])
    hf_rate, ours_rates = rates[0], dict(zip(names, rates[1:], strict=True))
    context = PROMPT_TOKENS + NEW_TOKENS // 2
    per_token_flops = flops_per_token(SHAPE, context)
    hf_bytes = bytes_per_token(hf)
    report.add("")
    report.add(f"batch-1 greedy decode, {PROMPT_TOKENS}-token prompt + {NEW_TOKENS} new, "
               f"6L/8H/512/8192, median of {rounds} interleaved rounds; FLOPs/token "
               f"{per_token_flops / 1e6:.1f} M")
    report.add(f"{'row':<34} {'tokens/s':>9} {'vs HF':>7} {'MB/token':>9} "
               f"{'of BW bound':>11} {'of FLOP bound':>13} {'ppl vs fp32':>11}")

    def row(label: str, rate: float, weight_bytes: int, ratio: float | None,
            ppl_change: str) -> None:
        report.add(f"{label:<34} {rate:>9.1f} "
                   f"{(f'{ratio:.2f}x' if ratio else '-'):>7} {weight_bytes / 1e6:>9.1f} "
                   f"{rate * weight_bytes / bandwidth:>10.0%} "
                   f"{rate * per_token_flops / flops:>12.1%} {ppl_change:>11}")

    row("HF transformers GPT-2 generate", hf_rate, hf_bytes, None, "-")
    row("genkiln fp32 (logits = HF)", ours_rates["fp32"], bytes_per_token(ours),
        ours_rates["fp32"] / hf_rate, "0")
    within = [p for p in ("int8", "bf16") if abs(ppl[p] / ppl["fp32"] - 1) <= 0.01]
    for p in ("int8", "bf16"):
        change = f"{100 * (ppl[p] / ppl['fp32'] - 1):+.2f} %"
        row(f"genkiln {p}", ours_rates[p],
            bytes_per_token(ours, 1) if p == "int8" else bytes_per_token(variants[p]),
            ours_rates[p] / hf_rate, change)
    ceilings = {p: linear_only_rate(m) for p, m in variants.items()}
    report.add("its Linear layers alone (the ceiling of these kernels, no other work): "
               + ", ".join(f"{p} {r:.1f} tokens/s ({ours_rates[p] / r:.0%} reached)"
                           for p, r in ceilings.items()))
    fastest = max(["fp32", *within], key=lambda p: ours_rates[p])
    report.add(f"fastest serving precision within 1 % perplexity: {fastest} "
               f"({ours_rates[fastest]:.1f} tokens/s, {ours_rates[fastest] / hf_rate:.2f}x HF; "
               f"targets: fp32 >= 1.4x, fastest >= 5x, >= 60 % of the bandwidth bound)")

    if not args.quick:
        report.add("")
        report.add("training tokens/s (forward, backward, AdamW), batch 8 x 256")
        a, b = interleaved(rounds, lambda: train_rate(ours, False, 8, 256, vocab),
                           lambda: train_rate(hf, True, 8, 256, vocab))
        report.add(f"genkiln {a:,.0f}  HF {b:,.0f}  ratio {a / b:.2f}x")
    report.save()


if __name__ == "__main__":
    main()
