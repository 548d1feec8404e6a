"""The car: a kinematic bicycle model with DeepRacer's size and limits, stepped at 15 Hz.

The command is a steering angle (degrees, positive to the left, within ±30) and a speed
(m/s). The steering servo follows at once; speed follows at a bounded acceleration; the
curvature is capped by the tyres' grip (lateral acceleration at most `GRIP`), so a fast
car asked for a tight turn runs wide, as a real one does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HZ = 15  # DeepRacer's control rate
DT = 1.0 / HZ
WHEELBASE = 0.165  # metres, front axle to rear axle
TRACK = 0.2  # metres between the left and right wheels (the car's width)
MAX_STEERING = 30.0  # degrees
MAX_SPEED = 4.0  # m/s, the most DeepRacer's action space allows
ACCELERATION, BRAKING = 4.0, 6.0  # m/s² the speed changes by at most
GRIP = 6.0  # m/s², the most lateral acceleration the tyres hold
MIN_TURN_RADIUS = WHEELBASE / math.tan(math.radians(MAX_STEERING))  # 0.29 m


@dataclass
class Car:
    x: float  # metres: the car's centre
    y: float
    heading: float  # radians, anticlockwise from the x axis
    speed: float = 0.0  # m/s
    steering: float = 0.0  # degrees, the last command

    def step(self, steering: float, speed: float) -> None:
        """Drive one control period under the command (steering degrees, speed m/s)."""
        self.steering = float(np.clip(steering, -MAX_STEERING, MAX_STEERING))
        target = float(np.clip(speed, 0.0, MAX_SPEED))
        before = self.speed
        self.speed += float(np.clip(target - before, -BRAKING * DT, ACCELERATION * DT))
        mean = 0.5 * (before + self.speed)
        curvature = math.tan(math.radians(self.steering)) / WHEELBASE
        if mean > 0:
            limit = GRIP / (mean * mean)
            curvature = max(-limit, min(limit, curvature))
        distance = mean * DT
        turn = curvature * distance
        middle = self.heading + 0.5 * turn  # the chord of the arc points halfway round it
        self.x += distance * math.cos(middle)
        self.y += distance * math.sin(middle)
        self.heading = math.atan2(math.sin(self.heading + turn), math.cos(self.heading + turn))

    def wheels(self) -> np.ndarray:
        """The four wheels' positions, (4, 2)."""
        c, s = math.cos(self.heading), math.sin(self.heading)
        forward = 0.5 * WHEELBASE * np.array([c, s])
        left = 0.5 * TRACK * np.array([-s, c])
        centre = np.array([self.x, self.y])
        return np.stack([centre + forward + left, centre + forward - left,
                         centre - forward + left, centre - forward - left])


@dataclass(frozen=True)
class ActionSpace:
    """DeepRacer's action space: a table of (steering, speed) pairs, or a continuous range."""

    kind: str  # "discrete" or "continuous"
    max_steering: float = MAX_STEERING  # degrees
    steering_granularity: int = 5  # discrete: steering angles from -max to +max
    min_speed: float = 0.5  # m/s: the slowest speed (continuous: the range's bottom)
    max_speed: float = 1.0
    speed_granularity: int = 2  # discrete: speeds from max/granularity up to max

    def table(self) -> list[tuple[float, float]]:
        """The discrete actions as (steering degrees, speed m/s), in DeepRacer's order:
        steering from right to left, each with every speed."""
        if self.steering_granularity == 1:
            angles = [0.0]
        else:
            angles = list(np.linspace(-self.max_steering, self.max_steering,
                                      self.steering_granularity))
        speeds = [self.max_speed * (k + 1) / self.speed_granularity
                  for k in range(self.speed_granularity)]
        return [(round(float(a), 4), round(s, 4)) for a in angles for s in speeds]

    def command(self, action: np.ndarray | int) -> tuple[float, float]:
        """The (steering, speed) an action asks for: an index into the table, or a pair in
        [-1, 1] scaled to the steering and speed ranges."""
        if self.kind == "discrete":
            return self.table()[int(np.asarray(action).reshape(-1)[0])]
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        steering = float(a[0]) * self.max_steering
        speed = self.min_speed + (float(a[1]) + 1.0) / 2.0 * (self.max_speed - self.min_speed)
        return steering, speed
