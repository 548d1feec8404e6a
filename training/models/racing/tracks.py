"""The bundled tracks, drawn here (nothing is downloaded): three to train on and one held out.

Each is a closed periodic cubic spline through a handful of control points, sampled every
15 cm (about DeepRacer's waypoint spacing), 0.76 m wide (DeepRacer's track width).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.interpolate import CubicSpline

from training.models.racing.track import Track, checked_track

WIDTH = 0.76
SPACING = 0.15

#: Control points (metres), in driving order (anticlockwise).
_CONTROL = {
    # An easy oval: two straights and two wide ends.
    "oval": [(0, 0), (2, -0.1), (4, 0), (5.4, 0.6), (5.8, 2), (5.4, 3.4), (4, 4), (2, 4.1),
             (0, 4), (-1.4, 3.4), (-1.8, 2), (-1.4, 0.6)],
    # S-bends: a back straight, then the return leg snakes left and right.
    "sbends": [(0, 0), (2.5, 0), (5, 0), (6.6, 0.8), (6.8, 2.4), (5.6, 3.4), (4.4, 2.6),
               (3.2, 3.6), (2, 2.8), (0.8, 3.8), (-0.6, 3.2), (-1.2, 1.6)],
    # Hairpins: two tight switchbacks between long legs.
    "hairpins": [(0, 0), (3, 0), (6, 0), (7.2, 0.8), (6.6, 1.8), (4.2, 1.9), (3.2, 2.7),
                 (4.2, 3.6), (6.6, 3.8), (7.4, 4.8), (6.4, 5.8), (3, 5.8), (0, 5.8),
                 (-1.4, 4.8), (-1.6, 2.9), (-1.4, 1)],
    # Held out from training: a lopsided loop with a chicane and a long sweeper.
    "heldout": [(0, 0), (2.2, -0.4), (4, 0.4), (5, -0.2), (6.4, 0.2), (7, 1.6), (6.2, 3),
                (4.4, 3.8), (2.4, 4.4), (0.6, 4.6), (-0.8, 3.6), (-1.2, 1.8)],
}
#: The tracks a policy trains on when the train channel brings none.
TRAINING = ("oval", "sbends", "hairpins")
#: The track evaluation also drives, never trained on.
HELD_OUT = "heldout"


def _spline_loop(control: list[tuple[float, float]]) -> np.ndarray:
    points = np.asarray([*control, control[0]], dtype=np.float64)
    chord = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])
    spline = CubicSpline(chord, points, bc_type="periodic")
    fine = spline(np.linspace(0, chord[-1], 2000, endpoint=False))
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(fine, axis=0).T))])
    count = int(along[-1] / SPACING)
    return np.stack([np.interp(np.linspace(0, along[-1], count, endpoint=False), along,
                               fine[:, k]) for k in (0, 1)], axis=1)


@functools.cache
def bundled_tracks() -> dict[str, Track]:
    """Every bundled track by name."""
    return {name: checked_track(name, _spline_loop(points), WIDTH, source=f"bundled {name}")
            for name, points in _CONTROL.items()}


def bundled_track(name: str) -> Track:
    tracks = bundled_tracks()
    if name not in tracks:
        raise KeyError(name)
    return tracks[name]
