"""A race track: a closed centre line of waypoints and a width, as DeepRacer describes one.

A track file is JSON (DeepRacer's own route files, NumPy arrays of centre, inner and outer
waypoints, load too):

    {"name": "my-track", "width": 0.76, "waypoints": [[x, y], [x, y], ...]}

in metres, the centre line in driving order; the loop closes by itself (repeating the
first waypoint at the end is allowed). A track is refused, naming the problem and where,
when it has too few waypoints, is open, crosses or overlaps itself, bends tighter than the
car turns or than half its width, or is narrower than the car needs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Fewest waypoints a centre line may have.
MIN_WAYPOINTS = 10
#: Narrowest track: the car (0.2 m wide) with room to steer.
MIN_WIDTH = 0.3
#: Widest track and longest lap a track may have (so a lap is bounded work).
MAX_WIDTH, MAX_LENGTH, MAX_WAYPOINTS = 5.0, 500.0, 5000
#: Tightest bend of the centre line: the car's turning circle (see `car.MIN_TURN_RADIUS`).
MIN_RADIUS = 0.3


class TrackError(ValueError):
    """A track can't be driven as given; the message names the file and the problem."""


@dataclass(frozen=True)
class Position:
    """Where a point lies relative to the track."""

    segment: int  # index of the centre-line segment nearest the point (waypoint i to i+1)
    along: float  # arc length from waypoint 0 to the nearest centre-line point, metres
    offset: float  # signed distance from the centre line, metres: positive left of it


@dataclass(frozen=True, eq=False)
class Track:
    name: str
    waypoints: np.ndarray  # (n, 2) centre line in driving order, first point not repeated
    width: float  # metres
    starts: np.ndarray = field(init=False)  # (n,) arc length at each waypoint
    segments: np.ndarray = field(init=False)  # (n, 2) waypoint i -> i+1 (wrapping)
    length: float = field(init=False)

    def __post_init__(self) -> None:
        points = np.asarray(self.waypoints, dtype=np.float64)
        segments = np.roll(points, -1, axis=0) - points
        lengths = np.hypot(segments[:, 0], segments[:, 1])
        object.__setattr__(self, "waypoints", points)
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "starts", np.concatenate([[0.0], np.cumsum(lengths)[:-1]]))
        object.__setattr__(self, "length", float(lengths.sum()))

    # --- geometry -----------------------------------------------------------------------
    def locate(self, point: np.ndarray) -> Position:
        """The nearest point of the centre line to ``point`` (x, y)."""
        rel = point - self.waypoints  # (n, 2)
        seg_sq = np.einsum("ij,ij->i", self.segments, self.segments)
        t = np.clip(np.einsum("ij,ij->i", rel, self.segments) / seg_sq, 0.0, 1.0)
        gap = rel - t[:, None] * self.segments
        i = int(np.argmin(np.einsum("ij,ij->i", gap, gap)))
        cross = self.segments[i, 0] * rel[i, 1] - self.segments[i, 1] * rel[i, 0]
        distance = math.hypot(gap[i, 0], gap[i, 1])
        return Position(segment=i, along=float(self.starts[i] + t[i] * math.sqrt(seg_sq[i])),
                        offset=distance if cross >= 0 else -distance)

    def distances(self, points: np.ndarray) -> np.ndarray:
        """Distance from each of ``points`` (m, 2) to the centre line, as (m,)."""
        rel = points[:, None, :] - self.waypoints[None, :, :]  # (m, n, 2)
        seg_sq = np.einsum("ij,ij->i", self.segments, self.segments)
        t = np.clip(np.einsum("mij,ij->mi", rel, self.segments) / seg_sq, 0.0, 1.0)
        gap = rel - t[..., None] * self.segments[None]
        return np.sqrt(np.einsum("mij,mij->mi", gap, gap).min(axis=1))

    def point_at(self, along: float) -> tuple[np.ndarray, float]:
        """The centre-line point ``along`` metres from waypoint 0, and the track's heading
        there (radians)."""
        along %= self.length
        i = int(np.searchsorted(self.starts, along, side="right") - 1)
        seg = self.segments[i]
        t = (along - self.starts[i]) / max(1e-12, float(np.hypot(*seg)))
        return self.waypoints[i] + t * seg, math.atan2(seg[1], seg[0])

    def borders(self) -> tuple[np.ndarray, np.ndarray]:
        """The left and right borders, each (n, 2): the centre line moved half the width
        along each waypoint's normal (the mean of its two segments' normals)."""
        unit = self.segments / np.hypot(self.segments[:, :1], self.segments[:, 1:])
        tangent = unit + np.roll(unit, 1, axis=0)
        tangent /= np.maximum(1e-12, np.hypot(tangent[:, :1], tangent[:, 1:]))
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        # A miter: at a corner the border sits half the width from both segments.
        cos_half = np.clip(np.einsum("ij,ij->i", tangent, unit), 0.5, 1.0)[:, None]
        half = self.width / 2 / cos_half
        return self.waypoints + half * normal, self.waypoints - half * normal

    def reversed(self) -> Track:
        """The same track driven the other way (DeepRacer's clockwise option)."""
        return Track(self.name, self.waypoints[::-1].copy(), self.width)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width,
                "waypoints": [[round(float(x), 4), round(float(y), 4)]
                              for x, y in self.waypoints]}


# --- reading and checking ---------------------------------------------------------------
def track_from_json(value: Any, *, source: str) -> Track:
    """A checked Track from the documented JSON shape (already parsed)."""
    if not isinstance(value, dict):
        raise TrackError(f"{source}: a track is a JSON object with 'waypoints' and 'width'; "
                         f"got {type(value).__name__}")
    unknown = sorted(set(value) - {"name", "width", "waypoints"})
    if unknown:
        raise TrackError(f"{source}: unknown keys {unknown}; a track has name, width and "
                         f"waypoints")
    width = value.get("width")
    if isinstance(width, bool) or not isinstance(width, int | float):
        raise TrackError(f"{source}: 'width' must be the track's width in metres (a number)")
    points = value.get("waypoints")
    if (not isinstance(points, list)
            or not all(isinstance(p, list | tuple) and len(p) == 2 for p in points)
            or not all(isinstance(c, int | float) and not isinstance(c, bool)
                       for p in points for c in p)):
        raise TrackError(f"{source}: 'waypoints' must be a list of [x, y] pairs of numbers "
                         f"(metres)")
    name = value.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise TrackError(f"{source}: 'name' must be a non-empty string")
    return checked_track(name, np.asarray(points, dtype=np.float64), float(width),
                         source=source)


def read_track(path: Path) -> Track:
    """A track file: JSON of the documented shape, or a DeepRacer route (.npy)."""
    if path.suffix == ".npy":
        try:
            route = np.load(path, allow_pickle=False)  # never unpickle a user's file
        except (OSError, ValueError) as exc:
            raise TrackError(f"{path.name}: not a readable NumPy array ({exc})") from None
        if route.ndim != 2 or route.shape[1] != 6:
            raise TrackError(f"{path.name}: a DeepRacer route is an (n, 6) array of centre, "
                             f"inner and outer waypoints; got shape {route.shape}")
        width = float(np.median(np.hypot(*(route[:, 2:4] - route[:, 4:6]).T)))
        return checked_track(path.stem, route[:, :2].astype(np.float64), width,
                             source=path.name)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrackError(f"{path.name}: not valid JSON ({exc})") from None
    return track_from_json(value, source=path.name)


def read_tracks(directory: Path) -> list[Track]:
    """Every track file (*.json, *.npy) in ``directory``; anything else is refused."""
    files = sorted(p for p in directory.rglob("*") if p.is_file()
                   and not p.name.startswith("."))
    others = [p.name for p in files if p.suffix not in (".json", ".npy")]
    if others:
        raise TrackError(f"{directory}: a racer's train channel holds track files (.json or "
                         f"DeepRacer .npy routes); found {others[:5]}")
    if not files:
        raise TrackError(f"{directory}: no track files (.json or .npy) in it")
    tracks = [read_track(p) for p in files]
    names = [t.name for t in tracks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TrackError(f"{directory}: several tracks are named {repeated}; names must "
                         f"differ")
    return tracks


def _at(point: np.ndarray) -> str:
    return f"({point[0]:.2f}, {point[1]:.2f})"


def checked_track(name: str, points: np.ndarray, width: float, *, source: str) -> Track:
    """A Track from raw waypoints, or a TrackError saying what to change."""
    if not np.isfinite(points).all() or not math.isfinite(width):
        raise TrackError(f"{source}: waypoints and width must be finite numbers")
    keep = np.ones(len(points), dtype=bool)
    if len(points) > 1:
        keep[1:] = np.hypot(*np.diff(points, axis=0).T) > 1e-9  # drop repeated points
    points = points[keep]
    if len(points) > 1 and np.hypot(*(points[-1] - points[0])) <= 1e-9:
        points = points[:-1]  # the loop closed by repeating the first point
    if len(points) < MIN_WAYPOINTS:
        raise TrackError(f"{source}: {len(points)} distinct waypoints; a track needs at "
                         f"least {MIN_WAYPOINTS}")
    if len(points) > MAX_WAYPOINTS:
        raise TrackError(f"{source}: {len(points)} waypoints; at most {MAX_WAYPOINTS}")
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise TrackError(f"{source}: width {width:g} m is too "
                         f"{'narrow' if width < MIN_WIDTH else 'wide'}; use {MIN_WIDTH:g} to "
                         f"{MAX_WIDTH:g} m (the car is 0.2 m wide)")
    steps = np.hypot(*np.diff(points, axis=0).T)
    gap = float(np.hypot(*(points[-1] - points[0])))
    if gap > 4 * float(np.median(steps)) and gap > width:
        raise TrackError(f"{source}: the track is open: its last waypoint {_at(points[-1])} "
                         f"is {gap:.2f} m from its first {_at(points[0])}; a track is a "
                         f"closed loop (add waypoints that close it)")
    track = Track(name, points, width)
    if track.length > MAX_LENGTH:
        raise TrackError(f"{source}: the lap is {track.length:.0f} m; at most "
                         f"{MAX_LENGTH:g} m")
    _check_crossings(track, source)
    _check_bends(track, source)
    return track


def _resampled(track: Track, spacing: float) -> np.ndarray:
    count = max(MIN_WAYPOINTS, int(track.length / spacing))
    return np.array([track.point_at(s)[0] for s in np.linspace(0, track.length, count,
                                                               endpoint=False)])


def _check_crossings(track: Track, source: str) -> None:
    """No two non-neighbouring centre-line segments may cross, and no two parts of the
    track may come closer than its width (their borders would overlap)."""
    a, d = track.waypoints, track.segments
    n = len(a)
    denom = d[:, None, 0] * d[None, :, 1] - d[:, None, 1] * d[None, :, 0]  # (n, n)
    rel = a[None, :, :] - a[:, None, :]  # from segment i's start to segment j's
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rel[..., 0] * d[None, :, 1] - rel[..., 1] * d[None, :, 0]) / denom
        u = (rel[..., 0] * d[:, None, 1] - rel[..., 1] * d[:, None, 0]) / denom
    index = np.arange(n)
    apart = np.abs(index[:, None] - index[None, :])
    apart = np.minimum(apart, n - apart) > 1
    eps = 1e-9  # a crossing through a waypoint counts once, at the segment it starts
    hits = apart & (t >= -eps) & (t < 1 - eps) & (u >= -eps) & (u < 1 - eps)
    if hits.any():
        i = int(np.argwhere(hits)[0][0])
        raise TrackError(f"{source}: the centre line crosses itself near "
                         f"{_at(a[i] + 0.5 * d[i])}; a track is a simple loop")
    points = _resampled(track, min(0.1, track.width / 4))
    along = np.linspace(0, track.length, len(points), endpoint=False)
    gap = np.abs(along[:, None] - along[None, :])
    gap = np.minimum(gap, track.length - gap)
    near = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    overlap = (gap > 2 * track.width) & (near < track.width)
    if overlap.any():
        i, j = np.argwhere(overlap)[0]
        raise TrackError(f"{source}: the track overlaps itself: {_at(points[i])} and "
                         f"{_at(points[j])} are {near[i, j]:.2f} m apart, less than the width "
                         f"{track.width:g} m; move them apart or narrow the track")


def _check_bends(track: Track, source: str) -> None:
    """The centre line's tightest bend (the circle through points 0.3 m apart) must be
    wider than the car's turning circle and than half the track's width."""
    points = _resampled(track, 0.3)
    prev, nxt = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    a = np.hypot(*(points - prev).T)
    b = np.hypot(*(nxt - points).T)
    c = np.hypot(*(nxt - prev).T)
    area2 = np.abs((points - prev)[:, 0] * (nxt - prev)[:, 1]
                   - (points - prev)[:, 1] * (nxt - prev)[:, 0])
    with np.errstate(divide="ignore"):
        radius = np.where(area2 > 1e-12, a * b * c / (2 * area2), np.inf)
    i = int(np.argmin(radius))
    limit = max(MIN_RADIUS, track.width / 2)
    if radius[i] < limit:
        raise TrackError(f"{source}: the bend near {_at(points[i])} has a radius of "
                         f"{radius[i]:.2f} m, tighter than {limit:.2f} m (the car's turning "
                         f"circle, or half the track's width); smooth it")
