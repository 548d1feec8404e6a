"""Checkpoints that let a stopped job resume exactly where it was.

SageMaker syncs `/opt/ml/checkpoints` to S3 during a job that has a checkpoint config and
restores it when the job (a managed spot job after an interruption, say) starts again.
A checkpoint holds everything the next step depends on: each network's weights, each
optimizer's moments and step counts, the data sampler's and torch's random states, and
the step reached. Tensors go to safetensors and the rest to JSON: nothing is unpickled
when a job resumes, so a checkpoint can't run code.

A recipe names what to save with `state_objects()`: a map of names to modules,
optimizers and `torch.Generator`s. The learning-rate schedule is a function of the step,
so the step is its state. In a data-parallel run rank 0 writes the checkpoint, holding
every rank's torch random state (each rank draws its own dropout masks and noise), and
every rank reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training import distributed

TENSORS = "checkpoint.safetensors"
META = "checkpoint.json"
FORMAT = 1

Stateful = nn.Module | torch.optim.Optimizer | torch.Generator


class CheckpointError(ValueError):
    """A checkpoint exists but can't be resumed; the message says why and what to do."""


def fingerprint(config: Mapping[str, Any]) -> str:
    """A hash of the settings that shape training: resuming under others would be wrong."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _optimizer_parts(name: str, optimizer: torch.optim.Optimizer
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/state/{param_id}/{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(name: str, optimizer: torch.optim.Optimizer,
                       tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}/state/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            param_id, field = key[len(prefix):].split("/", 1)
            state.setdefault(int(param_id), {})[field] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rank_rng_states() -> dict[str, torch.Tensor]:
    """Every rank's torch random states, by checkpoint key; empty on one process.

    A collective: every rank of a data-parallel world must call it at the same step.
    """
    world = distributed.current()
    if not world.active:
        return {}
    out = {f"torch/rng/rank{r}": t for r, t in enumerate(distributed.gather(
        torch.get_rng_state()))}
    if world.device.type == "cuda":
        out.update({f"torch/cuda_rng/rank{r}": t for r, t in enumerate(distributed.gather(
            torch.cuda.get_rng_state(world.device)))})
    return out


def save(directory: Path, *, step: int, objects: Mapping[str, Stateful],
         config_fingerprint: str, rank_rng: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous one intact.

    ``rank_rng`` (from `rank_rng_states`) adds the random states of a data-parallel run's
    ranks."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {"torch/rng": torch.get_rng_state(), **(rank_rng or {})}
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch/cuda_rng/{i}"] = rng
    kinds: dict[str, Any] = {}
    for name, obj in objects.items():
        if isinstance(obj, nn.Module):
            for key, value in obj.state_dict().items():
                tensors[f"{name}/{key}"] = value
            kinds[name] = {"kind": "module"}
        elif isinstance(obj, torch.optim.Optimizer):
            parts, extra = _optimizer_parts(name, obj)
            tensors.update(parts)
            kinds[name] = {"kind": "optimizer", **extra}
        else:
            tensors[name] = obj.get_state()
            kinds[name] = {"kind": "generator"}
    # Tied weights share storage, which safetensors refuses: save independent copies.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    tmp = directory / f".{TENSORS}.{os.getpid()}.tmp"
    save_file(tensors, str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, directory / TENSORS)
    meta = {"format": FORMAT, "step": step, "config": config_fingerprint,
            "sha256": digest, "objects": kinds}
    tmp_meta = directory / f".{META}.{os.getpid()}.tmp"
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, directory / META)  # the meta file commits the checkpoint


def restore(directory: Path, *, objects: Mapping[str, Stateful],
            config_fingerprint: str, rank: int = 0) -> int | None:
    """Load the checkpoint in ``directory`` into ``objects``; return its step, or None.

    Rank ``rank`` of a data-parallel run takes its own random state when the checkpoint
    holds one (it does not when an earlier run had fewer processes: then it keeps its own).
    """
    meta_path, tensor_path = directory / META, directory / TENSORS
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path} is corrupt ({exc}); delete the checkpoint to "
                              f"start over") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} has format {meta.get('format')!r}, this genkiln "
                              f"writes {FORMAT}; delete the checkpoint to start over")
    if meta["config"] != config_fingerprint:
        raise CheckpointError(
            f"{directory} holds a checkpoint of a run with other settings; resume with the "
            f"same hyperparameters, or clear the checkpoint location to start a new run")
    if not tensor_path.exists() or hashlib.sha256(tensor_path.read_bytes()).hexdigest() != \
            meta["sha256"]:
        raise CheckpointError(f"{tensor_path} is missing or does not match {META}; delete "
                              f"the checkpoint to start over")
    tensors = load_file(str(tensor_path))
    for name, obj in objects.items():
        kind = meta["objects"].get(name, {}).get("kind")
        if isinstance(obj, nn.Module) and kind == "module":
            prefix = f"{name}/"
            obj.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                 if k.startswith(prefix)})
        elif isinstance(obj, torch.optim.Optimizer) and kind == "optimizer":
            _restore_optimizer(name, obj, tensors, meta["objects"][name])
        elif isinstance(obj, torch.Generator) and kind == "generator":
            obj.set_state(tensors[name])
        else:
            raise CheckpointError(f"{meta_path} has no {name!r} of the right kind; delete "
                                  f"the checkpoint to start over")
    if rank == 0:
        torch.set_rng_state(tensors["torch/rng"])
    elif f"torch/rng/rank{rank}" in tensors:
        torch.set_rng_state(tensors[f"torch/rng/rank{rank}"])
    if torch.cuda.is_available():
        own = tensors.get(f"torch/cuda_rng/rank{rank}")
        if own is not None:
            torch.cuda.set_rng_state(own, distributed.current().device)
        elif rank == 0:
            cuda = [tensors[f"torch/cuda_rng/{i}"] for i in range(torch.cuda.device_count())
                    if f"torch/cuda_rng/{i}" in tensors]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
    return int(meta["step"])
