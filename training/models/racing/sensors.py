"""What the policy sees, as DeepRacer's sensors give it: a ray scan or a front camera.

`lidar`: distances along rays fanned across the front of the car to where they leave the
track (its borders), scaled to [0, 1] by the range, then the car's speed over the top
speed. `camera`: a small grayscale picture from a camera on the car looking ahead and
down, rendered from the track's geometry: tarmac grey, borders white, the centre line
pale, the world off the track dark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.models.racing.car import Car
from training.models.racing.track import Track

LIDAR_RAYS = 15  # rays from -90 to +90 degrees across the front
LIDAR_RANGE = 3.0  # metres
CAMERA_SHAPE = (24, 32)  # rows, columns
CAMERA_HEIGHT = 0.1  # metres above the ground
CAMERA_NEAR, CAMERA_FAR = 0.15, 2.5  # metres ahead seen at the bottom and top rows
CAMERA_FOV = 120.0  # degrees, horizontally


@dataclass(frozen=True)
class Borders:
    """A track's two borders as one set of segments, for casting rays against."""

    starts: np.ndarray  # (m, 2)
    vectors: np.ndarray  # (m, 2)

    @staticmethod
    def of(track: Track) -> Borders:
        left, right = track.borders()
        starts = np.concatenate([left, right])
        ends = np.concatenate([np.roll(left, -1, axis=0), np.roll(right, -1, axis=0)])
        return Borders(starts, ends - starts)


def lidar(car: Car, borders: Borders, rays: int = LIDAR_RAYS,
          reach: float = LIDAR_RANGE) -> np.ndarray:
    """Each ray's distance to the nearest border it meets, over ``reach`` (1: none met)."""
    origin = np.array([car.x, car.y])
    rel = borders.starts - origin
    near = np.einsum("ij,ij->i", rel, rel) < (reach + 1.0) ** 2  # segments within reach
    a, d = rel[near], borders.vectors[near]
    angles = car.heading + np.radians(np.linspace(-90.0, 90.0, rays))
    r = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (R, 2)
    denom = r[:, None, 0] * d[None, :, 1] - r[:, None, 1] * d[None, :, 0]  # (R, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a[None, :, 0] * d[None, :, 1] - a[None, :, 1] * d[None, :, 0]) / denom
        u = (a[None, :, 0] * r[:, None, 1] - a[None, :, 1] * r[:, None, 0]) / denom
    hit = (t > 0) & (u >= 0) & (u <= 1)
    distance = np.where(hit, t, np.inf).min(axis=1) if a.size else np.full(rays, np.inf)
    return (np.minimum(distance, reach) / reach).astype(np.float32)


def _camera_rays() -> tuple[np.ndarray, np.ndarray]:
    """The ground point each pixel sees, as (ahead, left) metres, each (rows, cols)."""
    rows, cols = CAMERA_SHAPE
    down = np.linspace(math.atan2(CAMERA_HEIGHT, CAMERA_FAR),
                       math.atan2(CAMERA_HEIGHT, CAMERA_NEAR), rows)  # top row looks furthest
    ahead = CAMERA_HEIGHT / np.tan(down)
    half = math.tan(math.radians(CAMERA_FOV / 2))
    across = np.linspace(half, -half, cols)  # the left of the picture is the car's left
    return np.repeat(ahead[:, None], cols, axis=1), ahead[:, None] * across[None, :]


_AHEAD, _LEFT = _camera_rays()


def camera(car: Car, track: Track) -> np.ndarray:
    """The front camera's grayscale picture, uint8 (1, rows, cols)."""
    c, s = math.cos(car.heading), math.sin(car.heading)
    x = car.x + _AHEAD * c - _LEFT * s
    y = car.y + _AHEAD * s + _LEFT * c
    points = np.stack([x.ravel(), y.ravel()], axis=1)
    rel = track.waypoints - np.array([car.x, car.y])
    reach = (CAMERA_FAR * 1.8 + 1.0) ** 2
    near = np.flatnonzero(np.einsum("ij,ij->i", rel, rel) < reach)
    if near.size == 0:
        return np.full((1, *CAMERA_SHAPE), 30, dtype=np.uint8)
    starts, vectors = track.waypoints[near], track.segments[near]
    gap = points[:, None, :] - starts[None]  # (p, m, 2)
    t = np.clip(np.einsum("pmk,mk->pm", gap, vectors)
                / np.einsum("mk,mk->m", vectors, vectors), 0.0, 1.0)
    off = gap - t[..., None] * vectors[None]
    distance = np.sqrt(np.einsum("pmk,pmk->pm", off, off).min(axis=1))
    half = track.width / 2
    pixels = np.where(distance > half + 0.03, 30, 110)
    pixels = np.where(np.abs(distance - half) <= 0.03, 250, pixels)
    pixels = np.where(distance <= 0.015, 190, pixels)
    return pixels.reshape(1, *CAMERA_SHAPE).astype(np.uint8)
