"""Bundled captioned scenes: pictures whose attributes vary independently, so that how much a
prompt names can be measured against how accurate the picture is.

A scene is a 48×48 RGB picture of one to three shapes on a plain background. Each shape
has a `shape`, `colour`, `size`, `fill` and a `position` (one cell of a 3×3 grid, a few
pixels of jitter inside it); the scene has a `background`. Every attribute is drawn
uniformly and independently, so an attribute a caption leaves out follows these uniform
frequencies. A caption names any subset of one shape's attributes (its shape always),
from "a circle" to "a small red striped circle at the top left on a pale blue
background"; a two-shape scene is also captioned by a relation, "a red circle left of a
blue square". Drawing is deterministic in the seed (Pillow, at 4× and then averaged down).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SIZE = 48  # pixels a side: a 3×3 grid of 16-pixel cells
_SUPER = 4  # drawn this many times larger, then averaged down: smooth edges

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (230, 200, 30), "purple": (150, 60, 190), "orange": (240, 130, 30)}
SIZES = {"small": 4.0, "large": 6.5}  # radius in pixels
FILLS = ("solid", "striped", "outlined")
BACKGROUNDS = {"white": (250, 250, 250), "pale blue": (200, 220, 245),
               "pale yellow": (245, 238, 200), "pale grey": (210, 210, 210)}
#: The 3×3 grid's cells, row by row from the top left.
POSITIONS = ("top left", "top", "top right", "left", "centre", "right",
             "bottom left", "bottom", "bottom right")
RELATIONS = ("left of", "right of", "above", "below")
#: What a caption may name of a shape, in the order captions grow by.
ATTRIBUTES = ("shape", "colour", "size", "position", "fill", "background")
#: Every attribute's values.
VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES),
    "position": POSITIONS, "fill": FILLS, "background": tuple(BACKGROUNDS)}


@dataclass(frozen=True)
class Thing:
    """One shape of a scene."""

    shape: str
    colour: str
    size: str
    fill: str
    position: str  # its cell of the 3×3 grid
    jitter: tuple[float, float] = (0.0, 0.0)  # pixels off the cell's centre


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: str

    def attribute(self, name: str, index: int = 0) -> str:
        """The value of attribute ``name`` of thing ``index`` (or of the scene)."""
        if name == "background":
            return self.background
        return str(getattr(self.things[index], name))


def _cell_centre(position: str) -> tuple[float, float]:
    row, col = divmod(POSITIONS.index(position), 3)
    step = SIZE / 3
    return (col + 0.5) * step, (row + 0.5) * step


def random_scene(rng: np.random.Generator, things: int | None = None) -> Scene:
    """A scene with ``things`` shapes (1-3 at random when None) in different cells."""
    count = int(rng.integers(1, 4)) if things is None else things
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    made = []
    for cell in cells:
        made.append(Thing(shape=str(rng.choice(SHAPES)), colour=str(rng.choice(list(COLOURS))),
                          size=str(rng.choice(list(SIZES))), fill=str(rng.choice(FILLS)),
                          position=POSITIONS[int(cell)],
                          jitter=(float(rng.uniform(-1.5, 1.5)),
                                  float(rng.uniform(-1.5, 1.5)))))
    return Scene(things=tuple(made), background=str(rng.choice(list(BACKGROUNDS))))


def _outline(thing: Thing) -> list[tuple[float, float]] | tuple[float, ...]:
    cx, cy = _cell_centre(thing.position)
    cx, cy = (cx + thing.jitter[0]) * _SUPER, (cy + thing.jitter[1]) * _SUPER
    r = SIZES[thing.size] * _SUPER
    if thing.shape == "circle":
        return (cx - r, cy - r, cx + r, cy + r)
    if thing.shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if thing.shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]  # diamond


def _draw(draw: ImageDraw.ImageDraw, thing: Thing, fill: int | tuple[int, ...] | None,
          outline: int | tuple[int, ...] | None, width: int) -> None:
    shape = _outline(thing)
    if thing.shape == "circle":
        assert isinstance(shape, tuple)
        draw.ellipse(shape, fill=fill, outline=outline, width=width)
    else:
        assert isinstance(shape, list)
        draw.polygon(shape, fill=fill, outline=outline, width=width)


def render(scene: Scene) -> np.ndarray:
    """The scene's picture, uint8 (SIZE, SIZE, 3)."""
    big = SIZE * _SUPER
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    stripes = Image.new("L", (big, big), 0)
    lines = ImageDraw.Draw(stripes)
    for k in range(-big, big, 4 * _SUPER):  # diagonal stripes, 2 px on, 2 px off
        lines.polygon([(k, 0), (k + 2 * _SUPER, 0), (k + 2 * _SUPER + big, big), (k + big, big)],
                      fill=255)
    for thing in scene.things:
        colour = COLOURS[thing.colour]
        if thing.fill == "solid":
            _draw(draw, thing, colour, None, 0)
        elif thing.fill == "outlined":
            _draw(draw, thing, None, colour, int(1.5 * _SUPER))
        else:
            mask = Image.new("L", (big, big), 0)
            _draw(ImageDraw.Draw(mask), thing, 255, None, 0)
            inside = Image.composite(stripes, Image.new("L", (big, big), 0), mask)
            image.paste(colour, mask=inside)
            _draw(draw, thing, None, colour, int(1 * _SUPER))
    small = image.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).copy()


# --- captions ---------------------------------------------------------------------------
def describe(scene: Scene, named: tuple[str, ...], index: int = 0) -> str:
    """A caption of thing ``index`` naming the attributes in ``named`` (shape always)."""
    thing = scene.things[index]
    words = []
    if "size" in named:
        words.append(thing.size)
    if "colour" in named:
        words.append(thing.colour)
    if "fill" in named:
        words.append(thing.fill)
    words.append(thing.shape)
    text = " ".join(words)
    if "position" in named:
        text += " in the centre" if thing.position == "centre" else f" at the {thing.position}"
    if "background" in named:
        text += f" on a {scene.background} background"
    article = "an" if text[0] in "aeiou" else "a"
    return f"{article} {text}"


def relation(scene: Scene, first: int = 0, second: int = 1) -> str | None:
    """How thing ``first`` lies from thing ``second``: "left of", "above", ...; None when
    they share a column and a row band ... (never: they sit in different cells)."""
    row_a, col_a = divmod(POSITIONS.index(scene.things[first].position), 3)
    row_b, col_b = divmod(POSITIONS.index(scene.things[second].position), 3)
    if col_a != col_b:
        return "left of" if col_a < col_b else "right of"
    if row_a != row_b:
        return "above" if row_a < row_b else "below"
    return None


def relation_caption(scene: Scene) -> str:
    """"a red circle left of a blue square", for a scene of two things."""
    link = relation(scene)
    assert link is not None, "two things in one scene sit in different cells"
    return (f"{describe(scene, ('shape', 'colour'), 0)} {link} "
            f"{describe(scene, ('shape', 'colour'), 1)}")


def random_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption at a random level of detail: of a one-thing scene, any subset of
    its attributes; of a two-thing scene, a relation half the time."""
    if len(scene.things) == 2 and rng.random() < 0.5:
        return relation_caption(scene)
    extra = [a for a in ATTRIBUTES[1:]
             if len(scene.things) == 1 or a in ("colour", "size", "fill", "background")]
    named = tuple(a for a in extra if rng.random() < 0.5)
    return describe(scene, ("shape", *named), int(rng.integers(len(scene.things))))


def detail_levels(scene: Scene) -> list[tuple[tuple[str, ...], str]]:
    """A one-thing scene's captions from the least to the most detailed: (what each
    names, the caption), naming one attribute more each time in ATTRIBUTES' order."""
    return [(ATTRIBUTES[:k], describe(scene, ATTRIBUTES[:k])) for k in
            range(1, len(ATTRIBUTES) + 1)]


@dataclass(frozen=True)
class CaptionedScenes:
    images: np.ndarray  # (N, SIZE, SIZE, 3) uint8
    scenes: list[Scene]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.scenes)


def bundled_scenes(count: int, seed: int, *, things: int | None = None) -> CaptionedScenes:
    """``count`` random scenes (``things`` shapes each, 1-3 when None) with one caption
    each at a random level of detail."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, things) for _ in range(count)]
    return CaptionedScenes(images=np.stack([render(s) for s in scenes]), scenes=scenes,
                           captions=[random_caption(s, rng) for s in scenes])


def with_attribute(scene: Scene, name: str, value: str) -> Scene:
    """The scene with its first thing's (or its background's) ``name`` set to ``value``."""
    if name == "background":
        return replace(scene, background=value)
    changes: dict[str, object] = {name: value}
    first = replace(scene.things[0], **changes)  # type: ignore[arg-type]
    return replace(scene, things=(first, *scene.things[1:]))
