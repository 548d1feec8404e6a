"""Local mode: emulate `/opt/ml` in a folder and run the same training entry point.

Nothing here trains: it only lays out the files SageMaker would, so the code path is
the one that runs in a container and in AWS. A local run checkpoints beside its artifact
(`<model-dir>-checkpoint/`, SageMaker's checkpoints folder), so Ctrl-C stops it at a step
boundary and the same command resumes it; the folder goes once the run completes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from training.contract import OptMl
from training.entry import EXIT_STOPPED, run_training


def emulate_opt_ml(root: Path, *, hyperparameters: Mapping[str, str],
                   data: Path | None = None, validation: Path | None = None,
                   channels: Mapping[str, Path] | None = None) -> OptMl:
    """Lay out an /opt/ml tree under ``root`` as SageMaker would for one host; ``channels``
    adds more (a refinement's `model` and `feedback`)."""
    opt_ml = OptMl(Path(root))
    opt_ml.config_dir.mkdir(parents=True, exist_ok=True)
    opt_ml.hyperparameters_path.write_text(
        json.dumps({k: str(v) for k, v in hyperparameters.items()}, indent=2))
    channels = {**{name: path for name, path in (("train", data), ("validation", validation))
                   if path is not None}, **(channels or {})}
    opt_ml.inputdataconfig_path.write_text(json.dumps({
        name: {"ContentType": "application/octet-stream", "TrainingInputMode": "File",
               "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels
    }, indent=2))
    opt_ml.resourceconfig_path.write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"}))
    for name, source in channels.items():
        target = opt_ml.root / "input" / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(source).is_file():  # a single file becomes a one-file channel
            target.mkdir(exist_ok=True)
            (target / Path(source).name).symlink_to(Path(source).resolve())
        else:
            target.symlink_to(Path(source).resolve(), target_is_directory=True)
    opt_ml.model_dir.mkdir(parents=True, exist_ok=True)
    opt_ml.output_data_dir.mkdir(parents=True, exist_ok=True)
    return opt_ml


def checkpoint_folder(model_dir: Path) -> Path:
    """Where a local run into ``model_dir`` keeps its checkpoint until it completes."""
    return model_dir.with_name(f"{model_dir.name}-checkpoint")


def train_locally(*, model_dir: Path, hyperparameters: Mapping[str, str],
                  data: Path | None = None, validation: Path | None = None,
                  channels: Mapping[str, Path] | None = None) -> int:
    """Train in an emulated /opt/ml; on success copy the artifact to ``model_dir``."""
    model_dir = Path(model_dir)
    checkpoints = checkpoint_folder(model_dir)
    checkpoints.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genkiln-opt-ml-") as root:
        opt_ml = emulate_opt_ml(Path(root), hyperparameters=hyperparameters, data=data,
                                validation=validation, channels=channels)
        opt_ml.checkpoint_dir.symlink_to(checkpoints.resolve(), target_is_directory=True)
        code = run_training(opt_ml)
        if code == 0:
            if model_dir.exists():
                shutil.rmtree(model_dir)
            shutil.copytree(opt_ml.model_dir, model_dir)
            shutil.rmtree(checkpoints, ignore_errors=True)
            print(f"genkiln: model saved to {model_dir}", flush=True)
        elif code == EXIT_STOPPED and any(checkpoints.iterdir()):
            print(f"genkiln: the checkpoint is in {checkpoints}; run the same command again "
                  f"to resume from it, or delete that folder to start over", flush=True)
        elif not any(checkpoints.iterdir()):
            checkpoints.rmdir()
        return code
