"""The SageMaker training container contract, as a small typed view of ``/opt/ml``.

Everything SageMaker tells a training container arrives as files under one root:

    input/config/hyperparameters.json    {"key": "string value", ...}
    input/config/inputdataconfig.json    {"train": {"ContentType": ..., ...}, ...}
    input/config/resourceconfig.json     {"current_host": "algo-1", "hosts": [...], ...}
    input/data/<channel>/                File mode puts channel data here
    model/                               becomes model.tar.gz in S3
    output/data/                         becomes output.tar.gz
    output/failure                       first 1,024 characters become FailureReason
    checkpoints/                         synced to S3 when a checkpoint config is set

In a container the root is ``/opt/ml``; locally it is an emulated temp folder, read by the
very same code (see ``training.local``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.settings import JobSettings

#: SageMaker keeps this many characters of output/failure as the job's FailureReason.
FAILURE_REASON_LIMIT = 1024


class ChannelError(ValueError):
    """A declared data channel is missing or empty."""


class ContractError(ValueError):
    """A file of the SageMaker layout is unreadable or malformed."""


@dataclass(frozen=True)
class ResourceConfig:
    current_host: str = "algo-1"
    hosts: list[str] = field(default_factory=lambda: ["algo-1"])
    network_interface_name: str | None = None

    @property
    def rank(self) -> int:
        """This host's index in the sorted host list (SageMaker sorts them: algo-1, algo-2)."""
        return sorted(self.hosts).index(self.current_host)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path} is not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class OptMl:
    """The ``/opt/ml`` tree of one training run."""

    root: Path = JobSettings.opt_ml
    #: what the job's environment moves elsewhere (SM_MODEL_DIR, SM_CHANNEL_*, ...)
    settings: JobSettings = field(default_factory=JobSettings)

    @classmethod
    def from_environment(cls) -> OptMl:
        """The job's own tree, as its environment describes it (read here, once)."""
        settings = JobSettings.from_env()
        return cls(settings.opt_ml, settings)

    # --- paths -------------------------------------------------------------------
    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def hyperparameters_path(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def inputdataconfig_path(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resourceconfig_path(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def model_dir(self) -> Path:
        return self.settings.model_dir or self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.settings.output_data_dir or self.output_dir / "data"

    @property
    def failure_path(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    # --- reading -----------------------------------------------------------------
    def hyperparameters(self) -> dict[str, str]:
        """The job's hyperparameters as SageMaker gives them: a map of strings."""
        if not self.hyperparameters_path.exists():
            return {}
        raw = _read_json(self.hyperparameters_path)
        if not isinstance(raw, dict):
            raise ContractError(f"{self.hyperparameters_path} must hold a JSON object")
        # Values should all be strings; a hand-written file may hold numbers. Keep the
        # one typing path: stringify and let the config parse them.
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}

    def declared_channels(self) -> dict[str, dict[str, Any]]:
        if not self.inputdataconfig_path.exists():
            return {}
        raw = _read_json(self.inputdataconfig_path)
        if not isinstance(raw, dict):
            raise ContractError(f"{self.inputdataconfig_path} must hold a JSON object")
        return raw

    def channel(self, name: str) -> Path | None:
        """The folder of channel ``name``, or None when the job has no such channel.

        A channel declared in inputdataconfig.json must exist and hold at least one
        file: SageMaker would have put data there, so its absence is an error, not a
        reason to fall back to a default data set.
        """
        declared = name in self.declared_channels()
        path = self.settings.channels.get(name.lower()) or self.root / "input" / "data" / name
        has_files = path.is_dir() and any(p.is_file() for p in path.rglob("*"))
        if declared and not path.is_dir():
            raise ChannelError(f"channel '{name}' is declared but {path} does not exist")
        if declared and not has_files:
            raise ChannelError(f"channel '{name}' is declared but {path} holds no files")
        return path if has_files else None

    def resource_config(self) -> ResourceConfig:
        if not self.resourceconfig_path.exists():
            return ResourceConfig()
        raw = _read_json(self.resourceconfig_path)
        return ResourceConfig(
            current_host=raw.get("current_host", "algo-1"),
            hosts=sorted(raw.get("hosts", ["algo-1"])),
            network_interface_name=raw.get("network_interface_name"),
        )

    # --- writing -----------------------------------------------------------------
    def write_failure(self, reason: str) -> None:
        """Record why the job failed, on one line, as SageMaker's FailureReason."""
        one_line = " ".join(reason.split())
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.failure_path.write_text(one_line[:FAILURE_REASON_LIMIT] + "\n", encoding="utf-8")
