"""Laps as DeepRacer's evaluation drives them, by any driver: a trained policy, a
pure-pursuit controller (what a competent engineer writes without learning) or a random
policy. Each lap starts at the start line (waypoint 0) a little off the centre line, as
drawn from its seed, and ends complete, off track, turned back or timed out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from training.models.racing.car import DT, GRIP, WHEELBASE, ActionSpace
from training.models.racing.env import Course, RaceEnv

#: (observation, environment) -> (steering degrees, speed m/s)
Driver = Callable[[np.ndarray, RaceEnv], tuple[float, float]]


@dataclass
class Lap:
    track: str
    reversed: bool
    completed: bool
    off_track: bool
    progress: float  # percent of the lap driven
    seconds: float  # the lap time when completed
    mean_speed: float  # m/s over the lap
    #: (steps, 4): x, y, speed, steering at every step, the start first
    trajectory: np.ndarray = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {"track": self.track, "reversed": self.reversed, "completed": self.completed,
                "off_track": self.off_track, "progress": round(self.progress, 2),
                "lap_time": round(self.seconds, 3) if self.completed else None,
                "mean_speed": round(self.mean_speed, 3)}


def drive_lap(course: Course, driver: Driver, *, sensor: str, actions: ActionSpace,
              seed: int, max_seconds: float | None = None) -> Lap:
    """One lap of ``course`` by ``driver``, timed out after ``max_seconds`` simulated (the
    environment's own limit otherwise)."""
    env = RaceEnv([course], sensor=sensor, actions=actions, random_start=False)
    obs, _ = env.reset(seed=seed, options={"course": 0, "start": 0.0})
    if max_seconds is not None:
        env.limit = min(env.limit, math.ceil(max_seconds / DT))
    rows = [(env.car.x, env.car.y, 0.0, 0.0)]
    done, info = False, {"completed": False, "off_track": False, "progress": 0.0}
    while not done:
        obs, _, terminated, truncated, info = env.drive(*driver(obs, env))
        rows.append((env.car.x, env.car.y, env.car.speed, env.car.steering))
        done = terminated or truncated
    trajectory = np.asarray(rows, dtype=np.float64)
    seconds = env.steps * DT
    return Lap(track=course.track.name, reversed=course.reversed,
               completed=bool(info["completed"]), off_track=bool(info["off_track"]),
               progress=float(info["progress"]), seconds=seconds,
               mean_speed=float(trajectory[1:, 2].mean()) if len(trajectory) > 1 else 0.0,
               trajectory=trajectory)


def summarise(laps: Sequence[Lap]) -> dict[str, float]:
    """DeepRacer's evaluation figures over some laps: completion rate, mean lap time of
    the completed ones (left out when none was), off-track rate, mean speed and progress."""
    done = [lap.seconds for lap in laps if lap.completed]
    return {"completion_rate": sum(lap.completed for lap in laps) / len(laps),
            **({"lap_time": float(np.mean(done))} if done else {}),
            "off_track_rate": sum(lap.off_track for lap in laps) / len(laps),
            "mean_speed": float(np.mean([lap.mean_speed for lap in laps])),
            "progress": float(np.mean([lap.progress for lap in laps]))}


def lap_figures(laps: Sequence[Lap], prefix: str, held_out: set[str]) -> dict[str, float]:
    """A driver's evaluation metrics: `summarise` of its laps on the training tracks as
    ``prefix``_..., and completion, lap time and off-track rate on the ``held_out`` ones
    as ``prefix``_heldout_..."""
    trained = summarise([lap for lap in laps if lap.track not in held_out])
    unseen = summarise([lap for lap in laps if lap.track in held_out])
    return {**{f"{prefix}_{k}": v for k, v in trained.items()},
            **{f"{prefix}_heldout_{k}": v for k, v in unseen.items()
               if k in ("completion_rate", "lap_time", "off_track_rate")}}


# --- the baselines ----------------------------------------------------------------------
def pure_pursuit(actions: ActionSpace, *, lookahead: float = 0.45) -> Driver:
    """Pure pursuit (Coulter 1992): steer the rear axle along the arc through the centre-line
    point ``lookahead`` metres ahead, at the top speed unless the arc is tighter than
    the tyres hold at it. Uses the true position, which the policy never sees."""

    def drive(_: np.ndarray, env: RaceEnv) -> tuple[float, float]:
        car, track = env.car, env.course.track
        along = env.position.along
        target, _heading = track.point_at(along + lookahead)
        rear = (car.x - 0.5 * WHEELBASE * math.cos(car.heading),
                car.y - 0.5 * WHEELBASE * math.sin(car.heading))
        dx, dy = target[0] - rear[0], target[1] - rear[1]
        alpha = math.atan2(dy, dx) - car.heading
        alpha = math.atan2(math.sin(alpha), math.cos(alpha))
        distance = max(1e-6, math.hypot(dx, dy))
        steering = math.degrees(math.atan2(2 * WHEELBASE * math.sin(alpha), distance))
        steering = max(-actions.max_steering, min(actions.max_steering, steering))
        curvature = abs(2 * math.sin(alpha) / distance)
        speed = actions.max_speed
        if curvature > 0:
            speed = min(speed, math.sqrt(GRIP / curvature))
        return steering, max(actions.min_speed, speed)

    return drive


def random_driver(actions: ActionSpace, seed: int) -> Driver:
    """Uniformly random actions from the action space."""
    rng = np.random.default_rng(seed)

    def drive(_: np.ndarray, env: RaceEnv) -> tuple[float, float]:
        if actions.kind == "discrete":
            return actions.command(int(rng.integers(len(actions.table()))))
        return actions.command(rng.uniform(-1, 1, 2))

    return drive

