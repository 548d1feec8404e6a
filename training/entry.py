"""The one training entry point: `train` in a container, `genkiln train` on a laptop.

It follows the SageMaker training contract on an `/opt/ml` root (see `training.contract`):
hyperparameters and channels in, an artifact in the model dir out, metrics on stdout, and
on any failure a one-line reason in `output/failure` and a non-zero exit.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from training.artifact import ArtifactError
from training.checkpoint import CheckpointError
from training.config import TrainConfig
from training.contract import ChannelError, ContractError, OptMl
from training.data.errors import DataError
from training.hyperparameters import HyperparameterError, build, check_known
from training.loop import Stopped, fit, run_fingerprint
from training.models import get_family

log = logging.getLogger("genkiln.train")

#: Errors in what the user gave us: reported as they are, without a traceback.
USER_ERRORS = (HyperparameterError, DataError, ChannelError, ContractError, ArtifactError,
               CheckpointError)

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STOPPED = 143  # 128 + SIGTERM, what a shell reports for a process it ended


def _say(message: str) -> None:
    print(message, flush=True)


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise HyperparameterError("device is cuda but no CUDA device is visible; use auto or cpu")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _publish(staging: Path, model_dir: Path) -> None:
    """Move a finished artifact into the model dir, so it never holds half an artifact."""
    model_dir.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        target = model_dir / item.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        shutil.move(str(item), target)


def train(opt_ml: OptMl, overrides: Mapping[str, str], stop: threading.Event) -> Path:
    """Run one training job on ``opt_ml``; return the model dir holding the artifact."""
    values = {**opt_ml.hyperparameters(), **overrides}
    family = get_family(values.get("family", TrainConfig.family).strip('"'))
    values = {**family.train_defaults, **values}
    check_known(values, [TrainConfig, family.config_cls])
    cfg = build(TrainConfig, values)
    model_cfg: Any = build(family.config_cls, values)
    train_dir = opt_ml.channel("train")
    validation_dir = opt_ml.channel("validation")
    device = _device(cfg.device)
    _say(f"genkiln: training family={family.name} on {device} "
         f"(hosts {opt_ml.resource_config().hosts})")

    recipe = family.recipe().Recipe(cfg, model_cfg, train_dir=train_dir,
                                    validation_dir=validation_dir, device=device, log=_say)
    checkpoints = opt_ml.checkpoint_dir if opt_ml.checkpoint_dir.is_dir() else None
    metrics = fit(recipe, cfg, stop=stop, log=_say, checkpoints=checkpoints,
                  fingerprint=run_fingerprint(cfg, model_cfg))

    opt_ml.model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".genkiln-staging-",
                                     dir=opt_ml.model_dir.parent) as staging:
        recipe.export(Path(staging), config={**asdict(cfg), **asdict(model_cfg)},
                      metrics=metrics)
        _publish(Path(staging), opt_ml.model_dir)
    _say(f"genkiln: artifact written to {opt_ml.model_dir}")
    return opt_ml.model_dir


def run_training(opt_ml: OptMl, overrides: Mapping[str, str] | None = None) -> int:
    """Train, mapping every outcome to SageMaker's: exit code and output/failure."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # PID 1 in a container ignores SIGTERM unless it installs a handler.
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        train(opt_ml, overrides or {}, stop)
        return 0
    except USER_ERRORS as exc:
        opt_ml.write_failure(str(exc))
        _say(f"genkiln: training failed: {exc}")
        return EXIT_BAD_INPUT
    except Stopped as exc:
        opt_ml.write_failure(str(exc))
        _say(f"genkiln: {exc}")
        return EXIT_STOPPED
    except Exception as exc:  # anything else is our bug: keep the traceback in the log
        traceback.print_exc(file=sys.stdout)
        opt_ml.write_failure(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
