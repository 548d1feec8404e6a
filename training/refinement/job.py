"""A refinement job: its inputs (the previous artifact, the feedback channel),
the method for the family, and the lineage it records."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from training.artifact import (
    MANIFEST,
    Artifact,
    artifact_sha256,
)
from training.contract import ChannelError
from training.data.errors import DataError
from training.feedback import FeedbackError, FeedbackSet, read_feedback
from training.rebuild import Rebuilt
from training.recipes.diffusion import Recipe as DiffusionRecipe
from training.recipes.image import ImageRecipe
from training.recipes.sequence import SequenceRecipe
from training.refinement.config import RefineConfig
from training.refinement.diffusion import DiffusionRefinement
from training.refinement.images import ImageRefinement
from training.refinement.sequences import SequenceRefinement


def find_artifact(channel: Path) -> Path:
    """The previous artifact in a `model` channel: its folder, or one model.tar.gz."""
    if (channel / MANIFEST).is_file():
        return channel
    archives = sorted(channel.rglob("*.tar.gz"))
    if len(archives) == 1:
        return archives[0]
    found = sorted(p for p in channel.rglob(MANIFEST))
    if len(found) == 1:
        return found[0].parent
    raise ChannelError(f"channel 'model' ({channel}) must hold one artifact: a folder with "
                       f"{MANIFEST} or one model.tar.gz; found {len(archives)} archives and "
                       f"{len(found)} manifests")


Refinement = SequenceRefinement | ImageRefinement | DiffusionRefinement


def refinement_for(rebuilt: Rebuilt, feedback: FeedbackSet, cfg: RefineConfig,
                   log: Callable[[str], None]) -> Refinement:
    """The method for the recipe's kind: preferences for sequence models, ratings and a
    reward model for image models, Diffusion-DPO for prompt-to-image models."""
    recipe = rebuilt.recipe
    if isinstance(recipe, DiffusionRecipe):
        return DiffusionRefinement(recipe, rebuilt, feedback, cfg, log)
    if isinstance(recipe, SequenceRecipe):
        return SequenceRefinement(recipe, rebuilt, feedback, cfg, log)
    if isinstance(recipe, ImageRecipe):
        return ImageRefinement(recipe, rebuilt, feedback, cfg, log)
    raise DataError(f"{rebuilt.family.name} models are not refined from feedback yet: "
                    f"retrain on a data folder that holds what people preferred")


def parent_lineage(parent: Artifact, refinement: Refinement,
                   feedback: FeedbackSet, before: Mapping[str, float]) -> dict[str, Any]:
    return {
        "parent_sha256": artifact_sha256(parent.directory),
        "parent_created_at": parent.manifest.get("created_at"),
        "parent_lineage": parent.manifest.get("lineage"),
        "feedback_records": len(feedback.feedback),
        "generations": len(feedback.generations),
        **refinement.lineage(),
        "metrics_before": dict(before),
    }


def read_feedback_channel(channel: Path) -> FeedbackSet:
    try:
        return read_feedback(channel)
    except FeedbackError as exc:
        raise DataError(str(exc)) from None
