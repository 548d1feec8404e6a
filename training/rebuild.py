"""A trained artifact back inside its training recipe: the data, held-out split and metrics
of the run that made it, with its weights loaded.

Evaluation scores an artifact with the very `evaluate()` its training printed, on the same
held-out split (rebuilt from the config's `seed` and `val_fraction`); refinement continues
training from it. Both need the data the model was trained on: the bundled data set when
training used it, otherwise the same folder again (a `train` channel or `--data`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.artifact import Artifact, ArtifactError
from training.config import TrainConfig
from training.data.errors import DataError
from training.hyperparameters import HyperparameterError, build, check_known
from training.models import Family, get_family
from training.models.transformer import TIED_HEAD
from training.recipes.contract import Recipe


def _as_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


def artifact_hyperparameters(artifact: Artifact) -> dict[str, str]:
    """The artifact's resolved training config as the string map SageMaker passes."""
    return {k: _as_string(v) for k, v in artifact.config.items()}


@dataclass
class Rebuilt:
    family: Family
    run: TrainConfig
    model_cfg: Any
    recipe: Recipe  # its model holding the artifact's weights


def rebuild(artifact: Artifact, *, train_dir: Path | None, validation_dir: Path | None,
            device: torch.device, overrides: Mapping[str, str] | None = None,
            extra_configs: tuple[type, ...] = (),
            log: Callable[[str], None] = print) -> Rebuilt:
    """The family's Recipe on the artifact's data and config (``overrides`` win, e.g. a
    refinement's max_steps), with the artifact's weights loaded."""
    overrides = dict(overrides or {})
    asked = overrides.get("family", artifact.family).strip('"')
    if asked != artifact.family:
        raise HyperparameterError(f"family is {asked} but the model to start from is a "
                                  f"{artifact.family}; drop family or set it to "
                                  f"{artifact.family}")
    family = get_family(artifact.family)
    check_known(overrides, [TrainConfig, family.config_cls, *extra_configs])
    values = {**artifact_hyperparameters(artifact), **overrides}
    source = str(artifact.manifest.get("data", {}).get("source", ""))
    if train_dir is None and not source.startswith("bundled"):
        raise DataError(f"{artifact.directory} was trained on {source or 'a data folder'}; "
                        f"give that data again (--data DIR, or a 'train' channel) to rebuild "
                        f"its held-out split")
    run = build(TrainConfig, values)
    model_cfg: Any = build(family.config_cls, values)
    recipe = family.build_recipe(run, model_cfg, train_dir=train_dir,
                                  validation_dir=validation_dir, device=device, log=log)
    _load_weights(artifact, recipe)
    return Rebuilt(family=family, run=run, model_cfg=model_cfg, recipe=recipe)


def _load_weights(artifact: Artifact, recipe: Recipe) -> None:
    state = artifact.tensors(device="cpu")
    model: torch.nn.Module = recipe.model
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: other data (classes, vocabulary) or config
        raise ArtifactError(f"{artifact.directory}: its weights do not fit a model built on "
                            f"the data given ({' '.join(str(exc).split())[:300]}); give the "
                            f"data it was trained on") from None
    if set(missing) - {TIED_HEAD} or unexpected:
        raise ArtifactError(f"{artifact.directory}: weights do not match its model_args "
                            f"(missing {sorted(set(missing) - {TIED_HEAD})}, unexpected "
                            f"{sorted(unexpected)})")
    tokenizer = recipe.tokenizer
    if tokenizer is not None:
        from training.models.formats.tokenizer import TextTokenizer

        saved = TextTokenizer.from_file(artifact.path("tokenizer.json"))
        if saved.vocabulary() != tokenizer.vocabulary():
            raise DataError(f"the text given is not what {artifact.directory} was trained on: "
                            f"a tokenizer trained on it differs from the artifact's "
                            f"tokenizer.json; give the same training data")
