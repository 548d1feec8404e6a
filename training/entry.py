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

from training.artifact import ArtifactError, annotate_artifact, load_artifact
from training.checkpoint import CheckpointError
from training.checkpoint import fingerprint as checkpoint_fingerprint
from training.config import TrainConfig
from training.contract import ChannelError, ContractError, OptMl
from training.data.errors import DataError
from training.feedback import FeedbackError
from training.hyperparameters import HyperparameterError, build, check_known
from training.loop import Stopped, fit, format_metrics, run_fingerprint
from training.models import get_family

log = logging.getLogger("genkiln.train")

#: Errors in what the user gave us: reported as they are, without a traceback.
USER_ERRORS = (HyperparameterError, DataError, ChannelError, ContractError, ArtifactError,
               CheckpointError, FeedbackError)

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
    """Run one training job on ``opt_ml``; return the model dir holding the artifact.

    A job with a `model` and a `feedback` channel refines the model in `model` from the
    judgements in `feedback` (see `training.refine`) instead of training a new one.
    """
    values = {**opt_ml.hyperparameters(), **overrides}
    model_channel, feedback_channel = opt_ml.channel("model"), opt_ml.channel("feedback")
    if model_channel is not None or feedback_channel is not None:
        if model_channel is None or feedback_channel is None:
            missing = "model" if model_channel is None else "feedback"
            raise ChannelError(f"refinement needs a 'model' channel (the artifact to refine) "
                               f"and a 'feedback' channel (the judgements); channel "
                               f"'{missing}' is missing")
        return refine(opt_ml, values, stop, model_channel=model_channel,
                      feedback_channel=feedback_channel)
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
    history: list[dict[str, float]] = []
    metrics = fit(recipe, cfg, stop=stop, log=_say, checkpoints=checkpoints,
                  fingerprint=run_fingerprint(cfg, model_cfg), history=history)
    return _export(opt_ml, recipe, config={**asdict(cfg), **asdict(model_cfg)},
                   metrics=metrics, history=history)


def _export(opt_ml: OptMl, recipe: Any, *, config: dict[str, Any], metrics: dict[str, float],
            history: list[dict[str, float]], **annotations: Any) -> Path:
    opt_ml.model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".genkiln-staging-",
                                     dir=opt_ml.model_dir.parent) as staging:
        recipe.export(Path(staging), config=config, metrics=metrics)
        # The logged metrics, for the loss curves of `genkiln evaluate`'s report.
        annotate_artifact(Path(staging), history=history, **annotations)
        _publish(Path(staging), opt_ml.model_dir)
    _say(f"genkiln: artifact written to {opt_ml.model_dir}")
    return opt_ml.model_dir


def refine(opt_ml: OptMl, values: Mapping[str, str], stop: threading.Event, *,
           model_channel: Path, feedback_channel: Path) -> Path:
    """Refine the artifact in ``model_channel`` on the judgements in ``feedback_channel``."""
    from training.rebuild import rebuild
    from training.refine import (
        REFINE_DEFAULTS,
        RefineConfig,
        find_artifact,
        parent_lineage,
        read_feedback_channel,
        refinement_for,
    )

    parent = load_artifact(find_artifact(model_channel))
    feedback = read_feedback_channel(feedback_channel)
    refine_keys = set(RefineConfig.__dataclass_fields__)
    refine_cfg = build(RefineConfig, {k: v for k, v in values.items() if k in refine_keys})
    device = _device(values.get("device", "auto").strip('"'))
    _say(f"genkiln: refining a {parent.family} model ({parent.directory}) on {device} from "
         f"{len(feedback.feedback)} judgements of {len(feedback.generations)} generations")
    rebuilt = rebuild(parent, train_dir=opt_ml.channel("train"),
                      validation_dir=opt_ml.channel("validation"), device=device,
                      overrides={**REFINE_DEFAULTS, **values}, extra_configs=(RefineConfig,),
                      log=_say)
    refinement = refinement_for(rebuilt, feedback, refine_cfg, _say)
    before = rebuilt.recipe.evaluate()
    _say(format_metrics(0, before))
    checkpoints = opt_ml.checkpoint_dir if opt_ml.checkpoint_dir.is_dir() else None
    history: list[dict[str, float]] = []
    lineage = parent_lineage(parent, refinement, feedback, before)
    # A checkpoint resumes only the same refinement: same parent, settings and feedback.
    fingerprint = checkpoint_fingerprint({
        "run": run_fingerprint(rebuilt.run, rebuilt.model_cfg),
        "refine": asdict(refine_cfg), "parent": lineage["parent_sha256"],
        "feedback": sorted(f.feedback_id for f in feedback.feedback)})
    metrics = fit(refinement, rebuilt.run, stop=stop, log=_say, checkpoints=checkpoints,
                  fingerprint=fingerprint, history=history)
    return _export(opt_ml, rebuilt.recipe,
                   config={**asdict(rebuilt.run), **asdict(rebuilt.model_cfg)},
                   metrics=metrics,
                   history=[*parent.manifest.get("history", []), *history],
                   lineage=lineage)


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
