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
from scipy.spatial import cKDTree

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


@dataclass(frozen=True)
class DistanceField:
    """Distance to a track's centre line on a grid over the track: what the camera looks up
    for every pixel, instead of measuring each against every segment."""

    origin: np.ndarray  # (2,) the grid's lower-left corner, metres
    cell: float  # metres a side
    distance: np.ndarray  # (rows, cols) over y, x

    @staticmethod
    def of(track: Track) -> DistanceField:
        """The field of ``track`` (one for both directions of a track)."""
        forward = track.waypoints.tobytes()
        backward = track.waypoints[::-1].copy().tobytes()
        key = min(forward, backward) + np.float64(track.width).tobytes()
        if key not in _FIELDS:
            if len(_FIELDS) >= 64:  # a server sees many tracks: keep the latest
                _FIELDS.pop(next(iter(_FIELDS)))
            _FIELDS[key] = DistanceField.build(track)
        return _FIELDS[key]

    @staticmethod
    def build(track: Track) -> DistanceField:
        cell = max(0.015, float(np.ptp(track.waypoints, axis=0).max()) / 1000)
        margin = track.width
        low = track.waypoints.min(axis=0) - margin
        shape = np.ceil((track.waypoints.max(axis=0) + margin - low) / cell).astype(int) + 1
        line = np.array([track.point_at(s)[0] for s in
                         np.arange(0.0, track.length, cell / 2)])  # the centre, densely
        ys, xs = np.mgrid[0:shape[1], 0:shape[0]]
        centres = low + (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * cell
        distance, _ = cKDTree(line).query(centres, distance_upper_bound=2 * margin)
        return DistanceField(low, cell, distance.reshape(shape[1], shape[0]))

    def at(self, points: np.ndarray) -> np.ndarray:
        """Distance to the centre line at each of ``points`` (p, 2); inf off the grid."""
        index = np.floor((points - self.origin) / self.cell).astype(np.int64)
        rows, cols = self.distance.shape
        inside = ((index[:, 0] >= 0) & (index[:, 0] < cols) & (index[:, 1] >= 0)
                  & (index[:, 1] < rows))
        out = np.full(len(points), np.inf)
        out[inside] = self.distance[index[inside, 1], index[inside, 0]]
        return out


_FIELDS: dict[bytes, DistanceField] = {}


def camera(car: Car, track: Track) -> np.ndarray:
    """The front camera's grayscale picture, uint8 (1, rows, cols)."""
    c, s = math.cos(car.heading), math.sin(car.heading)
    x = car.x + _AHEAD * c - _LEFT * s
    y = car.y + _AHEAD * s + _LEFT * c
    distance = DistanceField.of(track).at(np.stack([x.ravel(), y.ravel()], axis=1))
    half = track.width / 2
    pixels = np.where(distance > half + 0.03, 30, 110)
    pixels = np.where(np.abs(distance - half) <= 0.03, 250, pixels)
    pixels = np.where(distance <= 0.015, 190, pixels)
    return pixels.reshape(1, *CAMERA_SHAPE).astype(np.uint8)
