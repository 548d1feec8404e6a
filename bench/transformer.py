"""Transformer speed, side by side with Hugging Face transformers' GPT-2 of the same shape.

    python bench/transformer.py [--rounds 5] [--threads 1 2]

For each shape and thread count: training tokens/s (forward, backward, AdamW step) and
batch-1 decode tokens/s (greedy, KV cache on both sides), measured interleaved in one
process (genkiln, HF, genkiln, HF, ...) so a burst of machine noise hits both, reporting
the median of the rounds and genkiln/HF as a ratio. Random weights, no download: the
HF model is built from a GPT2Config. Results are printed and saved under bench/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.models.transformer import GPT, TransformerConfig

SHAPES = {
    # What `make run` trains and serves (the TransformerConfig defaults).
    "demo": dict(vocab_size=2048, block_size=128, n_layer=4, n_head=4, n_embd=128),
    # A GPT-2-like small model: 6 layers, 8 heads, width 512, vocabulary 8,192.
    "gpt-small": dict(vocab_size=8192, block_size=256, n_layer=6, n_head=8, n_embd=512),
}
TRAIN_BATCH = {"demo": 32, "gpt-small": 8}
PROMPT_TOKENS = 8
NEW_TOKENS = 100


def hf_model(shape: dict[str, int]) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=shape["vocab_size"], n_positions=shape["block_size"],
                     n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     activation_function="gelu", attn_implementation="sdpa",
                     bos_token_id=None, eos_token_id=None, loss_type="ForCausalLM")
    return GPT2LMHeadModel(cfg)


def ours(shape: dict[str, int]) -> GPT:
    # GPT-2 has biases; give ours the same so both do the same arithmetic.
    return GPT(TransformerConfig(**shape, dropout=0.0, bias=True))


def train_rate(model: torch.nn.Module, hf: bool, batch: int, block: int,
               vocab: int, steps: int = 3) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (batch, block))
    started = time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss if hf else model(x, x)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * block * steps / (time.perf_counter() - started)


def decode_rate(model: torch.nn.Module, hf: bool, vocab: int) -> float:
    model.eval()
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


def interleaved(rounds: int, a: Callable[[], float], b: Callable[[], float]
                ) -> tuple[float, float]:
    a(), b()  # warm-up: allocator, kernel choice
    xs, ys = [], []
    for _ in range(rounds):
        xs.append(a())
        ys.append(b())
    return statistics.median(xs), statistics.median(ys)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__}; "
            f"python {platform.python_version()}; load {load:.2f} at start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()

    lines = [f"# transformer bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", f"# {machine()}",
             f"{'shape':<10} {'threads':>7} {'measure':<18} {'genkiln':>12} {'HF GPT-2':>12}"
             f" {'ratio':>7}"]
    print("\n".join(lines), flush=True)
    for name in args.shapes:
        shape = SHAPES[name]
        torch.manual_seed(0)
        mine, theirs = ours(shape), hf_model(shape)
        assert abs(sum(p.numel() for p in mine.parameters())
                   - sum(p.numel() for p in theirs.parameters())) < 0.01 * sum(
            p.numel() for p in theirs.parameters()), "shapes differ"
        for threads in sorted(set(args.threads)):
            torch.set_num_threads(threads)
            batch, block, vocab = TRAIN_BATCH[name], shape["block_size"], shape["vocab_size"]
            rows = {
                "train tokens/s": interleaved(
                    args.rounds,
                    lambda: train_rate(mine, False, batch, block, vocab),  # noqa: B023
                    lambda: train_rate(theirs, True, batch, block, vocab)),  # noqa: B023
                "decode tokens/s": interleaved(
                    args.rounds,
                    lambda: decode_rate(mine, False, vocab),  # noqa: B023
                    lambda: decode_rate(theirs, True, vocab)),  # noqa: B023
            }
            for measure, (a, b) in rows.items():
                line = (f"{name:<10} {threads:>7} {measure:<18} {a:>12,.0f} {b:>12,.0f}"
                        f" {a / b:>6.2f}x")
                print(line, flush=True)
                lines.append(line)
    out = Path(__file__).parent / "results" / f"transformer-{datetime.now(UTC):%Y%m%d-%H%M}.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
