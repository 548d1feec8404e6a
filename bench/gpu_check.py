"""The GPU path, proved in one short run: bf16 autocast and DDP over NCCL.

    python bench/gpu_check.py                 # on a CUDA machine (one or more GPUs)
    python bench/gpu_check.py --steps 4       # on a CPU: the same checks, degenerate

Every run goes through the real entry point (`genkiln train --opt-ml ...`) on the bundled
docstrings, with the Transformer's default shape:

1. fp32 and bf16 on one process (bf16 is autocast; `precision=auto` picks it on CUDA):
   train_loss at each logged step, held-out loss and tokens/s. bf16 should track fp32
   closely and run faster on a GPU.
2. Data parallel at the same global batch: one process per GPU over NCCL when there are
   two or more GPUs (gloo with two processes on a CPU); on a single GPU, a one-process
   NCCL group all-reduces a gradient-sized tensor instead (NCCL refuses two ranks on one
   GPU). Loss curves of 1 and N processes are compared step by step.

Figures are printed, and on a GPU saved under bench/results/gpu_check-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def train(settings: dict[str, str], root: Path) -> dict[str, object]:
    (root / "input/config").mkdir(parents=True)
    (root / "input/config/hyperparameters.json").write_text(json.dumps(settings))
    done = subprocess.run([sys.executable, "-m", "genkiln", "train", "--opt-ml",
                           str(root)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    log = done.stdout
    losses = {int(s): float(v) for s, v in re.findall(r"^step=(\d+) train_loss=(\S+)", log,
                                                      re.MULTILINE)}
    rates = [float(r) for r in re.findall(r"tokens_per_second=(\S+)", log)][1:]
    val = re.findall(r"val_loss=(\S+)", log)
    header = next(line for line in log.splitlines() if line.startswith("genkiln: training"))
    return {"header": header, "train_loss": losses, "val_loss": float(val[-1]) if val else None,
            "tokens_per_second": sum(rates) / len(rates) if rates else None}


def nccl_single_rank() -> str:
    """Join a one-process NCCL group and average a 4M-float 'gradient' through it."""
    from training import distributed

    join = distributed.Rendezvous(host_rank=0, hosts=1, per_host=1, address="127.0.0.1",
                                  port=distributed.free_port())
    # join() only sets up groups of two or more in training; a group of one is legal.
    world = distributed.join(join, 0, torch.device("cuda"))
    try:
        grad = torch.nn.Parameter(torch.ones(4_000_000, device=world.device))
        grad.grad = torch.full_like(grad, 3.0)
        torch.distributed.all_reduce(grad.grad)
        ok = bool(torch.all(grad.grad == 3.0))
        return f"backend={torch.distributed.get_backend()} all_reduce ok={ok}"
    finally:
        distributed.leave()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count()
    base = {"family": "transformer", "max_steps": str(args.steps), "log_interval": "25",
            "eval_interval": str(args.steps), "eval_batches": "10", "seed": "1"}
    if not cuda:  # degenerate: a tiny model, a few steps, to show the script itself works
        base.update({"n_layer": "1", "n_head": "2", "n_embd": "32", "block_size": "32",
                     "vocab_size": "300", "batch_size": "8", "log_interval": "1",
                     "eval_batches": "1"})
    report: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__, "cuda": cuda, "gpus": gpus,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
    }
    with tempfile.TemporaryDirectory() as folder:
        runs = {}
        for name, extra in {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"}}.items():
            runs[name] = train({**base, **extra}, Path(folder) / name)
            print(name, json.dumps(runs[name]), flush=True)
        procs = gpus if gpus >= 2 else (2 if not cuda else 1)
        if procs >= 2:
            runs[f"{procs}-process"] = train({**base, "processes_per_host": str(procs)},
                                             Path(folder) / "ddp")
            single = runs["bf16" if cuda else "fp32"]["train_loss"]
            multi = runs[f"{procs}-process"]["train_loss"]
            assert isinstance(single, dict) and isinstance(multi, dict)
            report["ddp_max_loss_gap"] = max(abs(single[s] - multi[s]) for s in single)
            print(f"{procs}-process", json.dumps(runs[f"{procs}-process"]), flush=True)
        else:
            report["nccl"] = nccl_single_rank()
            print("nccl", report["nccl"], flush=True)
        report["runs"] = runs
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    if cuda:  # the CPU mode only shows the script works: nothing worth keeping
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"gpu_check-{datetime.now(UTC):%Y%m%d-%H%M}.json"
        out.write_text(json.dumps(report, indent=2))
        print(f"saved {out}")


if __name__ == "__main__":
    main()
