"""Everything a training or processing job takes from its environment, in one place.

SageMaker (or its training toolkit) sets the SM_ variables inside a job; the GENKILN_ ones
are ours. Each default is written once, as a field's default; `JobSettings.from_env()`
reads them all, once, when a job starts (`OptMl.from_environment`), and a bad value stops
it with what to change. The serving container's settings are `inference.settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# --- set by SageMaker training (toolkit conventions) ---
SM_MODEL_DIR = "SM_MODEL_DIR"
SM_OUTPUT_DATA_DIR = "SM_OUTPUT_DATA_DIR"
SM_CHANNEL_PREFIX = "SM_CHANNEL_"  # SM_CHANNEL_TRAIN, SM_CHANNEL_VALIDATION, ...
SM_NUM_GPUS = "SM_NUM_GPUS"
#: The port the hosts of a multi-instance job meet on (torch.distributed's convention).
MASTER_PORT = "MASTER_PORT"

# --- genkiln's own ---
#: Root of the SageMaker file layout; "/opt/ml" in a container, a temp folder locally.
GENKILN_OPT_ML = "GENKILN_OPT_ML"
#: Where derived data (the extracted bundled corpora) is cached between runs; unset:
#: $XDG_CACHE_HOME/genkiln, else ~/.cache/genkiln.
GENKILN_CACHE_DIR = "GENKILN_CACHE_DIR"
XDG_CACHE_HOME = "XDG_CACHE_HOME"


@dataclass(frozen=True)
class JobSettings:
    opt_ml: Path = Path("/opt/ml")
    #: where the artifact goes, when not <opt_ml>/model
    model_dir: Path | None = None
    #: where other outputs go, when not <opt_ml>/output/data
    output_data_dir: Path | None = None
    #: channel name (lower case) -> its folder, when not <opt_ml>/input/data/<name>
    channels: Mapping[str, Path] = field(default_factory=dict)
    #: GPUs of the instance, as SageMaker counts them; None: as torch sees them
    num_gpus: int | None = None
    master_port: int = 29500

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JobSettings:
        environ = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            raw = environ.get(name, "").strip()
            return Path(raw) if raw else None

        def whole(name: str, default: int | None, low: int, high: int) -> int | None:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise ValueError(f"{name}={raw!r}: set it to a whole number from {low} to "
                                 f"{high}, or unset it")
            return int(raw)

        channels = {name[len(SM_CHANNEL_PREFIX):].lower(): Path(value)
                    for name, value in environ.items()
                    if name.startswith(SM_CHANNEL_PREFIX) and value.strip()}
        port = whole(MASTER_PORT, cls.master_port, 1, 65535)
        assert port is not None
        return cls(opt_ml=path(GENKILN_OPT_ML) or cls.opt_ml, model_dir=path(SM_MODEL_DIR),
                   output_data_dir=path(SM_OUTPUT_DATA_DIR), channels=channels,
                   num_gpus=whole(SM_NUM_GPUS, None, 0, 1024), master_port=port)


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where derived data is cached (GENKILN_CACHE_DIR, else the user's cache folder)."""
    environ = os.environ if environ is None else environ
    base = environ.get(GENKILN_CACHE_DIR) or environ.get(XDG_CACHE_HOME)
    return Path(base) / "genkiln" if base else Path.home() / ".cache" / "genkiln"
