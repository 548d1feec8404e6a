"""The track simulator as a Gymnasium environment: one car, one lap per episode.

An episode starts the car at rest on one of the tracks (at a random waypoint, in a random
direction where both are allowed, a little off the centre line), and ends when the lap is
complete, the car leaves the track (its centre crosses a border) or turns back more than
a metre, or the time limit runs out. After every step the reward function gets
DeepRacer's `params` (`RaceEnv.params`). The same seed gives the same episode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from training.models.racing.car import DT, ActionSpace, Car
from training.models.racing.reward import RewardError, load_reward
from training.models.racing.sensors import (
    CAMERA_SHAPE,
    LIDAR_RAYS,
    Borders,
    camera,
    lidar,
)
from training.models.racing.track import Track

SENSORS = ("lidar", "camera")
#: A lap times out after this many times the time it takes at the slowest speed.
TIME_LIMIT_FACTOR = 2.0
#: Turning back this far (metres) ends the episode.
WRONG_WAY = 1.0

Reward = Callable[[dict[str, Any]], float]


@dataclass(frozen=True, eq=False)
class Course:
    """A track in one driving direction, with what every step reads of it."""

    track: Track  # waypoints in driving order
    reversed: bool  # driven against its waypoints' order (DeepRacer's clockwise)
    borders: Borders
    waypoints: list[tuple[float, float]]  # params["waypoints"]

    @staticmethod
    def of(track: Track, reversed_: bool = False) -> Course:
        driven = track.reversed() if reversed_ else track
        return Course(driven, reversed_, Borders.of(driven),
                      [(float(x), float(y)) for x, y in driven.waypoints])


def courses_of(tracks: Sequence[Track], both_directions: bool) -> list[Course]:
    """Each track as driven its waypoints' way, and the other way too where asked."""
    return [Course.of(t, r) for t in tracks
            for r in ((False, True) if both_directions else (False,))]


def observation_space(sensor: str, rays: int = LIDAR_RAYS) -> gym.spaces.Space[Any]:
    if sensor == "camera":
        return gym.spaces.Box(0, 255, (1, *CAMERA_SHAPE), dtype=np.uint8)
    return gym.spaces.Box(0.0, 1.0, (rays + 1,), dtype=np.float32)


def action_space(actions: ActionSpace) -> gym.spaces.Space[Any]:
    if actions.kind == "discrete":
        return gym.spaces.Discrete(len(actions.table()))
    return gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)


class RaceEnv(gym.Env[np.ndarray, Any]):
    metadata = {"render_modes": [], "render_fps": 15}  # noqa: RUF012 (gymnasium's own)

    def __init__(self, tracks: Sequence[Track | Course], *, sensor: str = "lidar",
                 actions: ActionSpace | None = None, reward: Reward | None = None,
                 both_directions: bool = True, random_start: bool = True,
                 start_noise: float = 0.1, report_reward_errors: bool = False) -> None:
        if sensor not in SENSORS:
            raise ValueError(f"sensor must be one of {SENSORS}; got {sensor!r}")
        # A Course is driven as it is; a Track both ways round where both_directions.
        self.courses = [c for t in tracks for c in
                        ([t] if isinstance(t, Course) else courses_of([t], both_directions))]
        self.sensor = sensor
        self.actions = actions or ActionSpace("discrete")
        self.reward_function = reward
        self.random_start = random_start
        self.start_noise = start_noise  # share of the half-width the start may be off centre
        # In a worker process an exception would end the process: there a reward error
        # ends the episode and travels back in the step's info ("reward_error") instead.
        self.report_reward_errors = report_reward_errors
        self.observation_space = observation_space(sensor)
        self.action_space = action_space(self.actions)
        self.course = self.courses[0]
        self.car = Car(0.0, 0.0, 0.0)

    # --- the episode ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Options: `course` (an index into `courses`) and `start` (metres along it) fix
        what is otherwise drawn."""
        super().reset(seed=seed)
        options = options or {}
        rng = self.np_random
        index = options.get("course")
        self.course = self.courses[int(rng.integers(len(self.courses))) if index is None
                                   else int(index)]
        track = self.course.track
        start = options.get("start")
        if start is None:
            start = float(rng.uniform(0, track.length)) if self.random_start else 0.0
        point, heading = track.point_at(float(start))
        offset = float(rng.uniform(-1, 1)) * self.start_noise * track.width / 2
        point = point + offset * np.array([-math.sin(heading), math.cos(heading)])
        heading += math.radians(float(rng.uniform(-5, 5))) * (self.start_noise > 0)
        self.car = Car(float(point[0]), float(point[1]), heading)
        self.steps, self.travelled, self.command_speed = 0, 0.0, 0.0
        self.position = track.locate(point)
        self.start_along = self.position.along
        self.limit = math.ceil(TIME_LIMIT_FACTOR * track.length / max(0.1, self.actions.min_speed)
                               / DT)
        return self.observe(), {"course": index if index is not None
                                else self.courses.index(self.course)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        return self.drive(*self.actions.command(action))

    def drive(self, steering: float, speed: float
              ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One step under a (steering degrees, speed m/s) command."""
        track = self.course.track
        self.car.step(steering, speed)
        self.command_speed = float(speed)
        self.steps += 1
        before = self.position.along
        self.position = track.locate(np.array([self.car.x, self.car.y]))
        moved = self.position.along - before
        moved -= track.length * round(moved / track.length)  # across waypoint 0
        self.travelled += moved
        off_track = abs(self.position.offset) > track.width / 2
        completed = self.travelled >= track.length
        params = self.params(off_track)
        info = {"progress": params["progress"], "off_track": off_track,
                "completed": completed, "steps": self.steps}
        try:
            reward = self.reward_function(params) if self.reward_function else 0.0
        except RewardError as exc:
            if not self.report_reward_errors:
                raise
            reward, info["reward_error"] = 0.0, str(exc)
        terminated = (completed or off_track or self.travelled < -WRONG_WAY
                      or "reward_error" in info)
        truncated = not terminated and self.steps >= self.limit
        return self.observe(), reward, terminated, truncated, info

    def observe(self) -> np.ndarray:
        if self.sensor == "camera":
            return camera(self.car, self.course.track)
        scan = lidar(self.car, self.course.borders)
        speed = np.float32(self.car.speed / max(1e-6, self.actions.max_speed))
        return np.append(scan, min(speed, np.float32(1.0)))

    # --- DeepRacer's params -------------------------------------------------------------
    def params(self, off_track: bool | None = None) -> dict[str, Any]:
        """The reward function's input, with DeepRacer's documented keys and meanings.

        Object-avoidance keys are there, empty (no other cars on the track); `speed` and
        `steering_angle` are the commanded action's, as in DeepRacer.
        """
        track, car, position = self.course.track, self.car, self.position
        half = track.width / 2
        if off_track is None:
            off_track = abs(position.offset) > half
        wheels = track.distances(car.wheels())
        n = len(track.waypoints)
        return {
            "all_wheels_on_track": bool((wheels <= half).all()),
            "x": car.x, "y": car.y,
            "heading": math.degrees(car.heading),
            "distance_from_center": abs(position.offset),
            "is_left_of_center": position.offset > 0,
            "is_offtrack": bool(off_track),
            "is_reversed": self.course.reversed,
            "is_crashed": False,
            "progress": 100.0 * min(1.0, max(0.0, self.travelled / track.length)),
            "steps": self.steps,
            "speed": self.command_speed,
            "steering_angle": car.steering,
            "track_width": track.width,
            "track_length": track.length,
            "waypoints": self.course.waypoints,
            "closest_waypoints": [position.segment, (position.segment + 1) % n],
            "closest_objects": [], "objects_distance": [], "objects_heading": [],
            "objects_left_of_center": [], "objects_location": [], "objects_speed": [],
        }


def training_env(tracks: Sequence[Track], *, sensor: str, actions: ActionSpace,
                 reward: Path | None, both_directions: bool) -> RaceEnv:
    """An environment as PPO's rollouts drive it, built where it runs (a worker process
    loads the reward file itself: a user's function does not cross processes)."""
    return RaceEnv(tracks, sensor=sensor, actions=actions, reward=load_reward(reward),
                   both_directions=both_directions, report_reward_errors=True)

