"""Pictures of tracks and the laps driven on them: tarmac between white borders, each lap's
path coloured by speed (blue slow, red fast), the start line marked; one panel a track."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from training.models.racing.laps import Lap
from training.models.racing.track import Track

PANEL = 360  # pixels a side
MARGIN = 16


def speed_colour(fraction: float) -> tuple[int, int, int]:
    """Blue (slowest) through green to red (fastest)."""
    f = float(np.clip(fraction, 0.0, 1.0))
    if f < 0.5:
        return (0, int(510 * f), int(255 * (1 - 2 * f)))
    return (int(510 * (f - 0.5)), int(255 * (2 - 2 * f)), 0)


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def _panel(track: Track, laps: Sequence[Lap], top_speed: float) -> Image.Image:
    image = Image.new("RGB", (PANEL, PANEL + 20), (40, 110, 50))
    draw = ImageDraw.Draw(image)
    left, right = track.borders()
    every = np.concatenate([left, right])
    low, high = every.min(axis=0), every.max(axis=0)
    scale = (PANEL - 2 * MARGIN) / max(1e-6, float((high - low).max()))

    def px(points: np.ndarray) -> list[tuple[float, float]]:
        xy = (points - low) * scale + MARGIN
        return [(float(x), float(PANEL - y)) for x, y in xy]  # y up

    outer, inner = sorted((left, right), key=_area, reverse=True)
    draw.polygon(px(outer), fill=(90, 90, 90))
    draw.polygon(px(inner), fill=(40, 110, 50))
    for border in (left, right):
        draw.line([*px(border), px(border)[0]], fill=(255, 255, 255), width=2)
    start = px(np.stack([left[0], right[0]]))
    draw.line(start, fill=(255, 220, 0), width=3)
    for lap in laps:
        points = px(lap.trajectory[:, :2])
        speeds = lap.trajectory[:, 2]
        for k in range(1, len(points)):
            draw.line([points[k - 1], points[k]], width=2,
                      fill=speed_colour(speeds[k] / max(1e-6, top_speed)))
    results = ", ".join(f"{lap.seconds:.1f} s" if lap.completed else
                        f"{lap.progress:.0f}% (off track)" if lap.off_track else
                        f"{lap.progress:.0f}%" for lap in laps)
    draw.text((6, PANEL + 4), f"{track.name}: {results}", fill=(255, 255, 255))
    return image


def track_picture(panels: Sequence[tuple[Track, Sequence[Lap]]], *,
                  columns: int = 2) -> bytes:
    """A PNG of each (track, laps) panel, ``columns`` to a row."""
    if not panels:
        raise ValueError("no tracks to draw")
    top = max([float(lap.trajectory[:, 2].max()) for _, laps in panels for lap in laps
               if len(lap.trajectory)] + [1e-6])
    images = [_panel(track, laps, top) for track, laps in panels]
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    width, height = images[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()
