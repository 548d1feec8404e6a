"""Does a more detailed prompt give a more accurate picture? Measured on the bundled scenes.

Prompts are captions of real held-out scenes (`training.data.scenes`) at rising detail:
level 1 names the shape only ("a circle"), level 6 every attribute ("a small red striped
circle at the top left on a pale blue background"). A judge trained on other real scenes
(`training.evaluation.attributes.SceneJudge`) reads each generated picture; an attribute
is right when the judge reads the scene's value. For a named attribute that is the
prompt's accuracy; for an unnamed one it is the rate at which the picture agrees with a
value the prompt never gave, which should be chance (every value is equally frequent in
the data). Two-thing scenes are prompted by a relation ("a red circle left of a blue
square"), right when the judge finds both things that way round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.scenes import (
    ATTRIBUTES,
    VALUES,
    CaptionedScenes,
    Scene,
    Thing,
    describe,
    relation,
    relation_caption,
)
from training.evaluation.attributes import Reading, SceneJudge
from training.evaluation.images import frechet_distance
from training.evaluation.results import Evaluation, Table
from training.models.formats.png import encode_png, grid

#: prompts -> generated pictures, uint8 (N, 48, 48, 3), at a guidance scale.
Draw = Callable[[Sequence[str], float], np.ndarray]
LEVELS = len(ATTRIBUTES)


@dataclass(frozen=True)
class DetailCase:
    scene: Scene
    named: tuple[str, ...]  # the attributes its prompt names
    prompt: str


def detail_cases(scenes: Sequence[Scene]) -> list[DetailCase]:
    """Each one-thing scene at every level of detail, level by level."""
    return [DetailCase(s, ATTRIBUTES[:k], describe(s, ATTRIBUTES[:k]))
            for k in range(1, LEVELS + 1) for s in scenes]


def _thing_for(reading: Reading) -> Thing | None:
    """The thing of a one-thing picture: of those the judge finds, the one it is surest
    of (choosing the one that best fits the prompt would reward pictures full of
    stray shapes)."""
    if not reading.things:
        return None
    return reading.things[max(reading.things, key=lambda p: reading.presence.get(p, 0.0))]


def agreements(readings: Sequence[Reading], cases: Sequence[DetailCase]
               ) -> dict[str, np.ndarray]:
    """Per attribute, whether each picture shows the scene's value (bool per case)."""
    out = {a: np.zeros(len(cases), dtype=bool) for a in ATTRIBUTES}
    for i, (reading, case) in enumerate(zip(readings, cases, strict=True)):
        out["background"][i] = reading.background == case.scene.background
        thing = _thing_for(reading)
        if thing is not None:
            for a in ATTRIBUTES[:-1]:
                out[a][i] = getattr(thing, a) == getattr(case.scene.things[0], a)
    return out


@dataclass
class DetailScores:
    """Accuracy of each attribute at each level of detail, named or not."""

    levels: dict[int, dict[str, float]]  # level -> attribute -> accuracy

    def named(self, level: int) -> dict[str, float]:
        return {a: v for a, v in self.levels[level].items() if a in ATTRIBUTES[:level]}

    def unnamed(self, level: int) -> dict[str, float]:
        return {a: v for a, v in self.levels[level].items() if a not in ATTRIBUTES[:level]}

    def mean_named(self, level: int) -> float:
        return float(np.mean(list(self.named(level).values())))

    def named_versus_unnamed(self) -> dict[str, tuple[float, float]]:
        """Per attribute: its accuracy when the prompt first names it, and the level
        before (unnamed), e.g. colour at level 2 against level 1."""
        return {a: (self.levels[k + 1][a], self.levels[k][a])
                for k, a in enumerate(ATTRIBUTES) if k >= 1}


def detail_scores(readings: Sequence[Reading], cases: Sequence[DetailCase]) -> DetailScores:
    agree = agreements(readings, cases)
    levels = {}
    for k in range(1, LEVELS + 1):
        rows = np.array([len(c.named) == k for c in cases])
        levels[k] = {a: float(agree[a][rows].mean()) for a in ATTRIBUTES} if rows.any() else {}
    return DetailScores(levels={k: v for k, v in levels.items() if v})


def chance() -> dict[str, float]:
    """An attribute's accuracy by luck: every value is equally frequent in the scenes."""
    return {a: 1.0 / len(VALUES[a]) for a in ATTRIBUTES}


def relation_accuracy(readings: Sequence[Reading], scenes: Sequence[Scene]) -> float:
    """Share of relation prompts whose picture has both things, the first lying that way
    of the second."""
    right = 0
    for reading, scene in zip(readings, scenes, strict=True):
        a, b = scene.things[0], scene.things[1]
        want = relation(scene)
        found = [(p, q) for p in reading.find(a.shape, a.colour)
                 for q in reading.find(b.shape, b.colour) if p != q]
        right += any(relation(Scene((Thing(a.shape, a.colour, a.size, a.fill, p),
                                     Thing(b.shape, b.colour, b.size, b.fill, q)),
                                    scene.background)) == want for p, q in found)
    return right / max(1, len(scenes))


@dataclass
class PromptEvaluation:
    """What `prompt_evaluation` measured: metrics, the accuracy-by-detail table, the
    guidance sweep and pictures of prompts at rising detail."""

    metrics: dict[str, float]
    scores: DetailScores
    by_guidance: dict[float, float]  # guidance scale -> mean accuracy of named attributes
    tables: list[Table]
    detail_grid: np.ndarray  # (levels × scenes, 3, 48, 48) in [0, 1], level by level
    detail_prompts: list[str]


def _accuracy_table(scores: DetailScores) -> Table:
    luck = chance()
    rows = []
    for k, accuracy in scores.levels.items():
        rows.append([str(k), ", ".join(ATTRIBUTES[:k]),
                     *(f"{accuracy[a]:.2f}" + ("" if a in ATTRIBUTES[:k] else " *")
                       for a in ATTRIBUTES), f"{scores.mean_named(k):.3f}"])
    rows.append(["chance", "", *(f"{luck[a]:.2f}" for a in ATTRIBUTES), ""])
    return Table(title="accuracy by prompt detail (* unnamed: should be near chance)",
                 header=["level", "named", *ATTRIBUTES, "mean named"], rows=rows)


def prompt_evaluation(draw: Draw, judge: SceneJudge, *, one_thing: Sequence[Scene],
                      two_things: Sequence[Scene], real: CaptionedScenes,
                      reference: CaptionedScenes, guidance: float,
                      sweep: Sequence[float] = (0.0, 1.0, 2.0, 7.0),
                      grid_scenes: int = 6) -> PromptEvaluation:
    """Prompt ``draw`` with captions of ``one_thing`` scenes at every level and with
    relations of ``two_things`` scenes; score with ``judge``. The Fréchet distance (in the
    judge's features) compares pictures drawn from ``real``'s own captions with ``real``'s
    images, beside the distance between ``reference`` (other real scenes) and ``real``."""
    cases = detail_cases(one_thing)
    pictures = draw([c.prompt for c in cases], guidance)
    scores = detail_scores(judge.read(pictures), cases)
    full = [c for c in cases if len(c.named) == LEVELS]
    by_guidance = {guidance: scores.mean_named(LEVELS)}
    for g in sweep:
        if g != guidance:
            swept = detail_scores(judge.read(draw([c.prompt for c in full], g)), full)
            by_guidance[g] = swept.mean_named(LEVELS)
    relations = draw([relation_caption(s) for s in two_things], guidance)
    drawn = draw(real.captions, guidance)
    fid = frechet_distance(judge.features(drawn), judge.features(real.images))
    floor = frechet_distance(judge.features(reference.images), judge.features(real.images))

    metrics = {f"val_{a}_accuracy": v for a, v in scores.levels[LEVELS].items()}
    luck = chance()
    metrics.update({
        "val_named_accuracy": scores.mean_named(LEVELS),
        "val_shape_only_accuracy": scores.mean_named(1),
        "val_unnamed_accuracy": float(np.mean(list(scores.unnamed(1).values()))),
        "val_chance_accuracy": float(np.mean([luck[a] for a in ATTRIBUTES[1:]])),
        "val_unconditional_accuracy": by_guidance.get(0.0, float("nan")),
        "val_relation_accuracy": relation_accuracy(judge.read(relations), two_things),
        "val_fid": fid, "val_fid_floor": floor,
    })
    gains = scores.named_versus_unnamed()
    tables = [
        _accuracy_table(scores),
        Table(title="each attribute named against unnamed (the level before it is named)",
              header=["attribute", "named", "unnamed", "chance"],
              rows=[[a, f"{n:.2f}", f"{u:.2f}", f"{luck[a]:.2f}"]
                    for a, (n, u) in gains.items()]),
        Table(title="mean accuracy of the named attributes (every attribute named) by "
                    "guidance scale", header=["guidance scale", "accuracy"],
              rows=[[f"{g:g}", f"{v:.3f}"] for g, v in sorted(by_guidance.items())]),
    ]
    chosen = [i for i, c in enumerate(cases) if c.scene in one_thing[:grid_scenes]]
    grid = pictures[chosen].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return PromptEvaluation(metrics=metrics, scores=scores, by_guidance=by_guidance,
                            tables=tables, detail_grid=grid,
                            detail_prompts=[cases[i].prompt for i in chosen])


def prompt_metrics(recipe: Any, out: Evaluation) -> None:
    """A diffusion artifact's evaluation: the held-out denoising loss, and on the bundled
    scenes the prompt-detail figures with their tables, the accuracy-by-detail curves
    and a grid of prompts at rising detail."""
    for name, value in recipe.evaluate().items():
        out.put(name, value)
    shown: PromptEvaluation | None = recipe.last_prompting
    if shown is None:
        out.notes.append("own data: no judge reads these pictures, so the evaluation is "
                         "the held-out denoising loss at six fixed timesteps and noises")
        pictures, prompts, columns = recipe.samples()
        out.grid_png = encode_png(grid(pictures, columns=columns), scale=2)
        out.texts = [(p, "") for p in prompts]
        return
    out.tables.extend(shown.tables)
    levels = sorted(shown.scores.levels)
    out.curves["accuracy by prompt detail (level k names the first k attributes)"] = {
        "mean of the named attributes": [(k, shown.scores.mean_named(k)) for k in levels],
        **{a: [(k, shown.scores.levels[k][a]) for k in levels] for a in ATTRIBUTES},
    }
    out.curves["accuracy with every attribute named, by guidance scale"] = {
        "mean of the named attributes": sorted(shown.by_guidance.items())}
    columns = len(shown.detail_grid) // LEVELS
    out.pictures.append((
        "prompts at rising detail: each column one held-out scene, each row one level "
        "(row k names the first k of " + ", ".join(ATTRIBUTES) + "); the last row's "
        "prompts: " + "; ".join(shown.detail_prompts[-columns:]),
        encode_png(grid(shown.detail_grid, columns=columns), scale=3)))
    out.notes.append(f"prompts: {recipe.cfg.eval_prompts} held-out scenes per level of "
                     f"detail and as many two-shape scenes for relations, one picture each "
                     f"(seeded), {recipe.cfg.steps} {recipe.cfg.sampler} steps at guidance "
                     f"{recipe.cfg.guidance_scale:g}; judged by a classifier trained on "
                     f"6,000 other real scenes")
