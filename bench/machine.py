"""What every benchmark shares: the machine's description and physical bounds, interleaved
measurement, and saving a run's lines under bench/results/.

The bounds (section 5 of issue 6): a decode step at batch 1 must read every weight once,
so tokens/s can be at most memory bandwidth ÷ weight bytes; a batch of B reads them once
for B tokens, and is then bounded by matmul throughput (2 FLOPs per weight per token).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def describe() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{cpu}; {os.cpu_count()} cores; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); python {platform.python_version()}; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")


def load_average() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def best_of(fn: Callable[[], float], rounds: int) -> float:
    return max(fn() for _ in range(rounds))


def memory_bandwidth(mb: int = 256, rounds: int = 5) -> float:
    """Bytes/s of a large copy (read + write), the best of a few: what streaming weights
    through the cores can reach."""
    src = torch.empty(mb * 2**20 // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)

    def once() -> float:
        started = time.perf_counter()
        dst.copy_(src)
        return 2 * src.numel() * 4 / (time.perf_counter() - started)

    return best_of(once, rounds)


def matmul_flops(n: int = 1024, rounds: int = 5) -> float:
    """FLOP/s of an fp32 n×n matmul, the best of a few."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b

    def once() -> float:
        started = time.perf_counter()
        a @ b
        return 2 * n**3 / (time.perf_counter() - started)

    return best_of(once, rounds)


def interleaved(rounds: int, *measures: Callable[[], float]) -> list[float]:
    """Median of each measure over ``rounds``, taken in turn (a, b, c, a, b, c, ...) so a
    burst of load on a shared machine hits them alike; one warm-up round first."""
    for measure in measures:
        measure()
    samples: list[list[float]] = [[] for _ in measures]
    for _ in range(rounds):
        for i, measure in enumerate(measures):
            samples[i].append(measure())
    return [statistics.median(s) for s in samples]


class Report:
    """Lines printed as they come and saved under bench/results/<name>-<time>.txt."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.lines: list[str] = []
        RESULTS.mkdir(exist_ok=True)
        # Written as lines come, so a run cut short still leaves what it measured.
        self.path = RESULTS / f"{name}-{datetime.now(UTC):%Y%m%d-%H%M}.txt"
        self.add(f"# {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        self.add(f"# {describe()}")

    def add(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)
        self.path.write_text("\n".join(self.lines) + "\n")

    def save(self) -> Path:
        self.add(f"# load average at the end {load_average()}")
        print(f"saved {self.path}")
        return self.path
