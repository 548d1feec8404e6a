"""A judge of scene pictures: which shape, colour, size and fill sits in each cell of the
3×3 grid, and on which background (`training.data.scenes`).

A small CNN trained on real scenes, so that generated pictures can be scored on what their
prompts asked for: an attribute a prompt named is right when the judge reads it in the
picture; a relation ("a red circle left of a blue square") is right when the judge finds
both things and the first lies that way of the second. It must be a sound judge: on real
held-out scenes it reads every attribute right at least 98% of the time
(tests/unit/test_scenes.py). Its last hidden layer is the feature space of the Fréchet
distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data.scenes import (
    BACKGROUNDS,
    COLOURS,
    FILLS,
    POSITIONS,
    SHAPES,
    SIZES,
    CaptionedScenes,
    Scene,
    Thing,
)

#: What the judge reads of a thing in a cell, with the values of each.
THING_HEADS = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES),
               "fill": FILLS}
CELLS = len(POSITIONS)
FEATURES = 128


@dataclass(frozen=True)
class Reading:
    """What the judge sees in one picture."""

    background: str
    things: dict[str, Thing]  # by position: the cells it finds a thing in
    #: by position: how sure it is that a thing is there (a probability)
    presence: dict[str, float] = field(default_factory=dict)

    def find(self, shape: str, colour: str) -> list[str]:
        """The positions of the things of this shape and colour."""
        return [p for p, t in self.things.items() if t.shape == shape and t.colour == colour]


#: Pixels a side of the crop the judge reads each cell through (a cell and a margin).
CROP = 22


class JudgeNet(nn.Module):
    """Reads one cell of the grid at a time, through a crop around it: whether a thing is
    there, its attributes, and the background."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            # Full resolution first: a striped fill is 2 pixels on, 2 off.
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (32, 11, 11)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (64, 5, 5)
            nn.Flatten(), nn.Linear(64 * 5 * 5, FEATURES), nn.ReLU(),
        )
        per_cell = 1 + sum(len(v) for v in THING_HEADS.values())  # presence, then each head
        self.thing = nn.Linear(FEATURES, per_cell)
        self.background = nn.Linear(FEATURES, len(BACKGROUNDS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, 3, 48, 48) in [0, 1] -> cell logits (B, 9, per_cell), background logits
        (B, backgrounds; the cells' mean), features (B, FEATURES; the cells' mean)."""
        cells, background, h = self.read_cells(_crops(x))  # (B * 9, ...) each
        return (cells.view(len(x), CELLS, -1), background.view(len(x), CELLS, -1).mean(1),
                h.view(len(x), CELLS, FEATURES).mean(1))

    def read_cells(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                        torch.Tensor]:
        """(n, 3, CROP, CROP) crops -> thing logits, background logits, features, each
        (n, ...)."""
        h = self.body(crops)  # (n, FEATURES)
        return self.thing(h), self.background(h), h


def _crops(x: torch.Tensor) -> torch.Tensor:
    """Each cell of each picture with a margin around it, (B * 9, C, CROP, CROP)."""
    step = x.shape[-1] // 3
    pad = (CROP - step) // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    cells = [padded[:, :, r * step:r * step + CROP, c * step:c * step + CROP]
             for r in range(3) for c in range(3)]
    return torch.stack(cells, dim=1).flatten(0, 1)


def _targets(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 9) presence, (B, 9, heads) value indices (-1 where empty), (B,) background."""
    present = torch.zeros(len(scenes), CELLS, dtype=torch.long)
    values = torch.full((len(scenes), CELLS, len(THING_HEADS)), -1, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for thing in scene.things:
            cell = POSITIONS.index(thing.position)
            present[i, cell] = 1
            for k, (name, options) in enumerate(THING_HEADS.items()):
                values[i, cell, k] = options.index(getattr(thing, name))
    background = torch.tensor([list(BACKGROUNDS).index(s.background) for s in scenes])
    return present, values, background


def _split(cells: torch.Tensor) -> list[torch.Tensor]:
    sizes = [1, *(len(v) for v in THING_HEADS.values())]
    return list(cells.split(sizes, dim=-1))


def as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) pictures as the judge's (N, 3, H, W) floats."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


class SceneJudge:
    def __init__(self, net: JudgeNet) -> None:
        self.net = net.eval()

    @staticmethod
    def fit(data: CaptionedScenes, *, seed: int = 0, epochs: int = 6,
            batch_size: int = 256) -> SceneJudge:
        """Train on the cells of real scenes (their captions are not used: the scenes are
        the labels). Each epoch sees every cell with a thing in it and as many empty ones,
        drawn afresh."""
        torch.manual_seed(seed)
        net = JudgeNet()
        optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        crops = torch.cat([(_crops(as_input(data.images[s:s + 500])) * 255).round()
                           .to(torch.uint8) for s in range(0, len(data), 500)])
        present, values, background = _targets(data.scenes)
        present, values = present.flatten(), values.flatten(0, 1)  # by crop
        background = background.repeat_interleave(CELLS)
        full, empty = torch.nonzero(present).flatten(), torch.nonzero(present == 0).flatten()
        generator = torch.Generator().manual_seed(seed)
        per_epoch = 2 * len(full)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=2e-3, total_steps=epochs * -(-per_epoch // batch_size))
        net.train()
        for _ in range(epochs):
            drawn = empty[torch.randperm(len(empty), generator=generator)[:len(full)]]
            chosen = torch.cat([full, drawn])
            chosen = chosen[torch.randperm(len(chosen), generator=generator)]
            for start in range(0, len(chosen), batch_size):
                index = chosen[start:start + batch_size]
                cells, back, _ = net.read_cells(crops[index].float() / 255.0)
                parts = _split(cells)
                loss = F.cross_entropy(back, background[index])
                loss = loss + F.binary_cross_entropy_with_logits(
                    parts[0].squeeze(-1), present[index].float())
                for k, logits in enumerate(parts[1:]):
                    target = values[index, k]
                    mask = target >= 0
                    if mask.any():
                        loss = loss + F.cross_entropy(logits[mask], target[mask])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        return SceneJudge(net)

    @torch.no_grad()
    def read(self, images: np.ndarray, batch_size: int = 256) -> list[Reading]:
        """What is in each picture (uint8 (N, 48, 48, 3))."""
        readings: list[Reading] = []
        for start in range(0, len(images), batch_size):
            cells, back, _ = self.net(as_input(images[start:start + batch_size]))
            parts = _split(cells)
            sure = torch.sigmoid(parts[0].squeeze(-1))  # (b, 9)
            present = sure > 0.5
            picks = [p.argmax(-1) for p in parts[1:]]  # each (b, 9)
            for i in range(len(cells)):
                things, presence = {}, {}
                for cell in np.flatnonzero(present[i].numpy()):
                    shape, colour, size, fill = (
                        options[int(picks[k][i, cell])]
                        for k, options in enumerate(THING_HEADS.values()))
                    position = POSITIONS[int(cell)]
                    things[position] = Thing(shape=shape, colour=colour, size=size,
                                             fill=fill, position=position)
                    presence[position] = float(sure[i, cell])
                readings.append(Reading(background=list(BACKGROUNDS)[int(back[i].argmax())],
                                        things=things, presence=presence))
        return readings

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, FEATURES): the judge's last hidden layer, for Fréchet distances."""
        out = [self.net(as_input(images[s:s + batch_size]))[2].numpy()
               for s in range(0, len(images), batch_size)]
        return np.concatenate(out)


def reading_accuracy(readings: list[Reading], scenes: list[Scene]) -> dict[str, float]:
    """How often the judge reads each attribute of each real thing right (a thing it
    misses counts wrong for every attribute), and the background."""
    right: dict[str, int] = {"position": 0, **dict.fromkeys(THING_HEADS, 0)}
    total = 0
    background = 0
    for reading, scene in zip(readings, scenes, strict=True):
        background += reading.background == scene.background
        for thing in scene.things:
            total += 1
            seen = reading.things.get(thing.position)
            right["position"] += seen is not None
            for name in THING_HEADS:
                right[name] += seen is not None and getattr(seen, name) == getattr(thing, name)
    spurious = sum(len(set(r.things) - {t.position for t in s.things})
                   for r, s in zip(readings, scenes, strict=True))
    return {**{k: v / total for k, v in right.items()},
            "background": background / len(scenes),
            "spurious_things_per_picture": spurious / len(scenes)}
