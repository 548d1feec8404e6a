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
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from training import distributed
from training.artifact import ArtifactError, annotate_artifact, load_artifact
from training.checkpoint import CheckpointError
from training.checkpoint import fingerprint as checkpoint_fingerprint
from training.config import TrainConfig
from training.contract import ChannelError, ContractError, OptMl
from training.data.errors import DataError
from training.distributed import Rendezvous, World
from training.feedback import FeedbackError
from training.hyperparameters import HyperparameterError, build, check_known
from training.loop import (
    Stopped,
    fit,
    format_metrics,
    mixed_precision,
    run_fingerprint,
    uses_bf16,
)
from training.models import Family, get_family
from training.models.racing.reward import RewardError
from training.models.racing.track import TrackError
from training.recipes.contract import Recipe
from training.threads import fit_threads
from training.workers import run_workers, write_outcome

log = logging.getLogger("genkiln.train")

#: Errors in what the user gave us: reported as they are, without a traceback.
USER_ERRORS = (HyperparameterError, DataError, ChannelError, ContractError, ArtifactError,
               CheckpointError, FeedbackError, TrackError, RewardError)

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


class WorkersFailed(Exception):
    """A training worker failed; its exit code and reason are the job's."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _quiet(_: str) -> None:
    pass


def _settings(opt_ml: OptMl, overrides: Mapping[str, str]) -> tuple[Family, TrainConfig, Any]:
    values = {**opt_ml.hyperparameters(), **overrides}
    family = get_family(values.get("family", TrainConfig.family).strip('"'))
    values = {**family.train_defaults, **values}
    check_known(values, [TrainConfig, family.config_cls])
    return family, build(TrainConfig, values), build(family.config_cls, values)


def rendezvous(opt_ml: OptMl, family: Family, cfg: TrainConfig) -> Rendezvous | None:
    """How this host joins a data-parallel world, or None to train in this process."""
    cluster = opt_ml.resource_config()
    per_host = distributed.processes_per_host(cfg.processes_per_host,
                                              opt_ml.settings.num_gpus)
    size = len(cluster.hosts) * per_host
    if size == 1:
        return None
    shape = f"{len(cluster.hosts)} host(s) x {per_host} process(es)"
    if not family.data_parallel:
        raise HyperparameterError(
            f"processes_per_host: the {family.name} family trains on one process only "
            f"({family.data_parallel_note}), not on {shape}; set processes_per_host=1 and use "
            f"one instance")
    if cfg.batch_size % size:
        raise HyperparameterError(
            f"batch_size {cfg.batch_size} does not split evenly over {size} processes "
            f"({shape}); use a multiple of {size}")
    if len(cluster.hosts) == 1:
        address, port = "127.0.0.1", distributed.free_port()
    else:
        address = distributed.resolve(cluster.hosts[0])
        port = opt_ml.settings.master_port
    return Rendezvous(host_rank=cluster.rank, hosts=len(cluster.hosts), per_host=per_host,
                      address=address, port=port)


def _refinement_channels(opt_ml: OptMl) -> tuple[Path, Path] | None:
    """The `model` and `feedback` channels of a refinement job; None for a new model."""
    model_channel, feedback_channel = opt_ml.channel("model"), opt_ml.channel("feedback")
    if model_channel is None and feedback_channel is None:
        return None
    if model_channel is None or feedback_channel is None:
        missing = "model" if model_channel is None else "feedback"
        raise ChannelError(f"refinement needs a 'model' channel (the artifact to refine) "
                           f"and a 'feedback' channel (the judgements); channel "
                           f"'{missing}' is missing")
    return model_channel, feedback_channel


def train(opt_ml: OptMl, overrides: Mapping[str, str], stop: threading.Event, *,
          join: Rendezvous | None = None, local_rank: int = 0) -> Path:
    """Run one training job (or one worker of it) on ``opt_ml``; return the model dir.

    A job with a `model` and a `feedback` channel refines the model in `model` from the
    judgements in `feedback` (see `training.refinement`) instead of training a new one.
    """
    channels = _refinement_channels(opt_ml)
    if channels is not None:
        return refine(opt_ml, {**opt_ml.hyperparameters(), **overrides}, stop,
                      model_channel=channels[0], feedback_channel=channels[1])
    family, cfg, model_cfg = _settings(opt_ml, overrides)
    train_dir = opt_ml.channel("train")
    validation_dir = opt_ml.channel("validation")
    device = _device(cfg.device)
    world = distributed.join(join, local_rank, device) if join else distributed.current()
    try:
        return _train(opt_ml, family, cfg, model_cfg, stop, world, train_dir, validation_dir)
    finally:
        if join:
            distributed.leave()


def _train(opt_ml: OptMl, family: Family, cfg: TrainConfig, model_cfg: Any,
           stop: threading.Event, world: World, train_dir: Path | None,
           validation_dir: Path | None) -> Path:
    say = _say if world.is_main else _quiet
    device = world.device if world.active else _device(cfg.device)
    say(f"genkiln: training family={family.name} on {device} "
        f"(hosts {opt_ml.resource_config().hosts}, {world.size} process(es), "
        f"precision {'bf16' if uses_bf16(cfg, device) else 'fp32'})")
    recipe = family.build_recipe(cfg, model_cfg, train_dir=train_dir,
                                  validation_dir=validation_dir, device=device, log=say,
                                  channels={c: opt_ml.channel(c) for c in family.channels})
    if device.type == "cpu":
        fit_threads(recipe, lr=cfg.learning_rate, requested=cfg.num_threads,
                    processes=world.size if world.active else 1,
                    precision=mixed_precision(cfg, device), log=say)
    checkpoints = opt_ml.checkpoint_dir if opt_ml.checkpoint_dir.is_dir() else None
    history: list[dict[str, float]] = []
    metrics = fit(recipe, cfg, stop=stop, log=say, checkpoints=checkpoints,
                  fingerprint=run_fingerprint(cfg, model_cfg), device=device,
                  history=history)
    if not world.is_main:
        return opt_ml.model_dir
    return _export(opt_ml, recipe, config={**asdict(cfg), **asdict(model_cfg)},
                   metrics=metrics, history=history)


def _export(opt_ml: OptMl, recipe: Recipe, *, config: dict[str, Any], metrics: dict[str, float],
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
    """Refine the artifact in ``model_channel`` on the judgements in ``feedback_channel``.

    Refinement runs in one process: its batches of judgements are small.
    """
    from training.rebuild import rebuild
    from training.refinement.config import REFINE_DEFAULTS, RefineConfig
    from training.refinement.job import (
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
                  fingerprint=fingerprint, history=history, device=device)
    return _export(opt_ml, rebuilt.recipe,
                   config={**asdict(rebuilt.run), **asdict(rebuilt.model_cfg)},
                   metrics=metrics,
                   history=[*parent.manifest.get("history", []), *history],
                   lineage=lineage)


class StopRequest(threading.Event):
    """Set by the signal that stops a run: SIGTERM (a stopped job, a spot interruption,
    scale-in) or Ctrl-C. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        super().__init__()
        self.by = "SIGTERM"

    def __call__(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            self.by = "Ctrl-C"
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.set()

    def install(self, *signums: int) -> dict[int, Any]:
        """Handle ``signums`` (from the main thread only); the handlers replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self) for s in signums}


def _outcome(work: Callable[[], object], stop: StopRequest | None = None) -> tuple[int, str]:
    """Run ``work``, mapping every outcome to SageMaker's: an exit code and a reason."""
    try:
        work()
        return 0, ""
    except USER_ERRORS as exc:
        _say(f"genkiln: training failed: {exc}")
        return EXIT_BAD_INPUT, str(exc)
    except Stopped as exc:
        if stop is not None and stop.by != exc.by:
            exc = Stopped(exc.step, stop.by)
        _say(f"genkiln: {exc}")
        return EXIT_STOPPED, str(exc)
    except WorkersFailed as exc:
        return exc.code, str(exc)
    except Exception as exc:  # anything else is our bug: keep the traceback in the log
        traceback.print_exc(file=sys.stdout)
        return EXIT_FAILED, f"internal error: {type(exc).__name__}: {exc}"


def _train_here_or_in_workers(opt_ml: OptMl, overrides: Mapping[str, str],
                              stop: threading.Event) -> None:
    if _refinement_channels(opt_ml) is not None:
        train(opt_ml, overrides, stop)
        return
    family, cfg, _ = _settings(opt_ml, overrides)
    join = rendezvous(opt_ml, family, cfg)
    for channel in ("train", "validation", *family.channels):  # refused here, not per worker
        opt_ml.channel(channel)
    if join is None:
        train(opt_ml, overrides, stop)
        return
    code, reason = run_workers(_worker, (opt_ml, dict(overrides), join), join.per_host, stop)
    if code:
        raise WorkersFailed(code, reason)


def _worker(local_rank: int, results: Path, opt_ml: OptMl, overrides: dict[str, str],
            join: Rendezvous) -> None:
    """One spawned training process: rank ``join.host_rank * join.per_host + local_rank``."""
    stop = StopRequest()
    stop.install(signal.SIGTERM, signal.SIGINT)
    code, reason = _outcome(lambda: train(opt_ml, overrides, stop, join=join,
                                          local_rank=local_rank), stop)
    write_outcome(results, local_rank, code, reason)
    sys.exit(code)


def run_training(opt_ml: OptMl, overrides: Mapping[str, str] | None = None) -> int:
    """Train, mapping every outcome to SageMaker's: exit code and output/failure."""
    stop = StopRequest()
    # PID 1 in a container ignores SIGTERM unless it installs a handler; Ctrl-C stops a
    # run on a laptop the same way, at a step boundary, saving its checkpoint.
    previous = stop.install(signal.SIGTERM, signal.SIGINT)
    try:
        code, reason = _outcome(lambda: _train_here_or_in_workers(opt_ml, overrides or {},
                                                                  stop), stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code:
        opt_ml.write_failure(reason)
    return code
