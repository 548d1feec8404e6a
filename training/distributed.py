"""Data-parallel training with torch.distributed: one process per device, on every host.

`genkiln train` is the same entry point on 1..N hosts with 1..N processes each. Hosts come
from SageMaker's `resourceconfig.json` (sorted: algo-1, algo-2, ...); processes per host
from the `processes_per_host` hyperparameter. The `train` process on each host starts its
workers itself (no torchrun in the image); the workers meet on the first host (gloo on
CPU, NCCL on GPU). Rank r of a world of W trains on rows [r*B/W, (r+1)*B/W) of every
global batch of B examples, so the global batch, the sampling and the learning rate are
those of a one-process run; gradients are averaged over the world before each update.
Only rank 0 evaluates, logs, writes checkpoints and the artifact.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

#: Port of the rendezvous on the first host of a multi-host job (torchrun's default).
#: How long to wait for hosts to resolve and for every worker to join.
JOIN_TIMEOUT_S = 600


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among `size` processes and on its host."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def part(self, n: int) -> slice:
        """The rows of a global batch of ``n`` this rank trains on."""
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


@dataclass(frozen=True)
class Rendezvous:
    """What every worker needs to join: the world's shape and where rank 0 listens."""

    host_rank: int
    hosts: int
    per_host: int
    address: str
    port: int

    @property
    def size(self) -> int:
        return self.hosts * self.per_host


_world = World()


def current() -> World:
    return _world


def processes_per_host(setting: int, gpus: int | None = None) -> int:
    """``processes_per_host`` resolved: 0 means one per GPU (SageMaker's count, else the
    ones torch sees; one on CPU)."""
    if setting > 0:
        return setting
    return max(1, torch.cuda.device_count() if gpus is None else gpus)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def resolve(host: str, timeout_s: float = JOIN_TIMEOUT_S) -> str:
    """The first host's address; SageMaker host names may resolve late, so retry."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.gethostbyname(host)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def join(rendezvous: Rendezvous, local_rank: int, device: torch.device) -> World:
    """Join the process group as rank host_rank * per_host + local_rank."""
    global _world
    rank = rendezvous.host_rank * rendezvous.per_host + local_rank
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    os.environ.update({"MASTER_ADDR": rendezvous.address, "MASTER_PORT": str(rendezvous.port),
                       "RANK": str(rank), "WORLD_SIZE": str(rendezvous.size),
                       "LOCAL_RANK": str(local_rank)})
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                            world_size=rendezvous.size,
                            timeout=timedelta(seconds=JOIN_TIMEOUT_S))
    _world = World(rank=rank, size=rendezvous.size, local_rank=local_rank, device=device)
    return _world


def leave() -> None:
    global _world
    if dist.is_initialized():
        dist.destroy_process_group()
    _world = World()


# --- collectives (no-ops on one process) ----------------------------------------------


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each gradient by its mean over the world, in one all-reduce."""
    if not _world.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= _world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def reduce_metrics(metrics: Mapping[str, float], *, summed: Iterable[str] = ()
                   ) -> dict[str, float]:
    """Metrics of the global batch: the mean over ranks, or the sum for ``summed`` keys
    (counts such as tokens). Every rank passes the same keys in the same order."""
    if not _world.active or not metrics:
        return dict(metrics)
    keys = list(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                          device=_world.device)
    dist.all_reduce(values)
    sums = set(summed)
    return {k: float(v) if k in sums else float(v) / _world.size
            for k, v in zip(keys, values.tolist(), strict=True)}


def maximum(*values: float) -> tuple[float, ...]:
    """Each value's maximum over the world (a flag set anywhere, the slowest clock)."""
    if not _world.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(tensor.tolist())


def gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape everywhere), on the CPU, in rank order."""
    if not _world.active:
        return [tensor]
    local = tensor.to(_world.device)
    parts = [torch.empty_like(local) for _ in range(_world.size)]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def broadcast_modules(modules: Iterable[nn.Module]) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if not _world.active:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)
