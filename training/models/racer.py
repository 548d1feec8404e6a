"""The racer: a driving policy trained by PPO on a reward function, as AWS DeepRacer trains one.

The network is Stable-Baselines3's actor-critic policy (Schulman et al. 2017's PPO trains
it): an MLP over the lidar scan and speed, or a small CNN over the front camera's picture,
then a policy head (a categorical over DeepRacer's table of steering × speed actions, or a
Gaussian over a continuous steering and speed) and a value head. The simulator, tracks,
reward functions and laps are in `training.models.racing`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from training.artifact import Artifact, ArtifactError
from training.hyperparameters import require
from training.models.racing.car import MAX_SPEED, MAX_STEERING, ActionSpace
from training.models.racing.env import SENSORS, RaceEnv, action_space, observation_space
from training.models.racing.laps import Driver, pure_pursuit, random_driver
from training.models.racing.track import Track, track_from_json
from training.models.racing.tracks import HELD_OUT, TRAINING

FAMILY = "racer"
#: The tracks a run trained on, and the one it was evaluated on held out, in the artifact.
TRACKS_FILE = "tracks.json"


@dataclass
class RacerConfig:
    # What the policy sees: "lidar" (a ray scan of the track's borders and the speed) or
    # "camera" (a 24×32 grayscale picture ahead); lidar trains to the targets in minutes.
    sensor: Literal["lidar", "camera"] = "lidar"
    # DeepRacer's action space: "discrete" (a table of steering × speed) or "continuous".
    action_space: Literal["discrete", "continuous"] = "discrete"
    max_steering_angle: float = 30.0  # degrees either way (at most 30, the car's limit)
    steering_angle_granularity: int = 5  # discrete: steering angles from -max to +max
    max_speed: float = 1.0  # m/s (at most 4)
    speed_granularity: int = 2  # discrete: speeds max/granularity, ..., max
    min_speed: float = 0.5  # continuous: the slowest speed (m/s)
    # PPO, under DeepRacer's names (batch_size and learning_rate are the shared ones).
    num_episodes_between_training: int = 20  # experience episodes per policy update
    num_epochs: int = 10  # passes over each update's experience
    beta_entropy: float = 0.01  # entropy bonus: exploration
    discount_factor: float = 0.999  # gamma
    loss_type: Literal["huber", "mean_squared_error"] = "huber"  # of the value head
    gae_lambda: float = 0.95  # generalised advantage estimation (Schulman et al. 2016)
    clip_range: float = 0.2  # PPO's ratio clip
    hidden_size: int = 64  # width of the policy's and the value's two hidden layers
    # Training tracks: bundled names, comma-separated, when the train channel brings none.
    tracks: str = ",".join(TRAINING)
    # The track evaluation drives besides the training ones (bundled name); a validation
    # channel's tracks replace it.
    held_out_track: str = HELD_OUT
    both_directions: bool = True  # train (and evaluate) each track both ways round
    num_envs: int = 8  # environments driven together in the rollouts
    # Where they run: "in_process", "subprocess" (one process each), or "auto":
    # subprocesses on a host of 4 cores or more.
    vec_env: Literal["auto", "in_process", "subprocess"] = "auto"
    eval_laps: int = 3  # evaluation laps per track and direction (DeepRacer runs 3)

    def validate(self) -> None:
        require(self.sensor in SENSORS, "sensor", f"must be one of {', '.join(SENSORS)}")
        require(0 < self.max_steering_angle <= MAX_STEERING, "max_steering_angle",
                f"must be in (0, {MAX_STEERING:g}] degrees")
        require(self.steering_angle_granularity in (1, 3, 5, 7), "steering_angle_granularity",
                "must be 1, 3, 5 or 7 (DeepRacer's choices)")
        require(0 < self.max_speed <= MAX_SPEED, "max_speed", f"must be in (0, {MAX_SPEED:g}] m/s")
        require(1 <= self.speed_granularity <= 5, "speed_granularity", "must be 1 to 5")
        require(0 < self.min_speed <= self.max_speed, "min_speed",
                "must be positive and at most max_speed")
        require(1 <= self.num_episodes_between_training <= 1000,
                "num_episodes_between_training", "must be 1 to 1000")
        require(1 <= self.num_epochs <= 100, "num_epochs", "must be 1 to 100")
        require(0 <= self.beta_entropy <= 1, "beta_entropy", "must be between 0 and 1")
        require(0 < self.discount_factor <= 1, "discount_factor", "must be in (0, 1]")
        require(0 < self.gae_lambda <= 1, "gae_lambda", "must be in (0, 1]")
        require(0 < self.clip_range < 1, "clip_range", "must be between 0 and 1")
        require(self.hidden_size >= 4, "hidden_size", "must be at least 4")
        require(1 <= self.num_envs <= 256, "num_envs", "must be 1 to 256")
        require(1 <= self.eval_laps <= 100, "eval_laps", "must be 1 to 100")

    def actions(self) -> ActionSpace:
        return ActionSpace(self.action_space, max_steering=self.max_steering_angle,
                           steering_granularity=self.steering_angle_granularity,
                           min_speed=(self.min_speed if self.action_space == "continuous"
                                      else self.max_speed / self.speed_granularity),
                           max_speed=self.max_speed, speed_granularity=self.speed_granularity)


class CameraCNN(BaseFeaturesExtractor):
    """Three small convolutions over the 24×32 camera picture (SB3's NatureCNN needs 36×36)."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128) -> None:
        super().__init__(observation_space, features_dim)
        channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, 5, stride=2, padding=2), nn.ReLU(),  # (16, 12, 16)
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),  # (32, 6, 8)
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),  # (32, 3, 4)
            nn.Flatten())
        with torch.no_grad():
            size = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(size, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations))


def policy_arguments(cfg: RacerConfig) -> dict[str, Any]:
    """The SB3 policy's keyword arguments for this config."""
    arguments: dict[str, Any] = {"net_arch": [cfg.hidden_size, cfg.hidden_size]}
    if cfg.sensor == "camera":
        arguments["features_extractor_class"] = CameraCNN
    return arguments


def build_policy(cfg: RacerConfig) -> ActorCriticPolicy:
    """A fresh policy for ``cfg``'s sensor and action space (the optimizer is Adam)."""
    return ActorCriticPolicy(observation_space(cfg.sensor), action_space(cfg.actions()),
                             lambda _: 3e-4, **policy_arguments(cfg))


#: Who can drive a lap, by the name requests and evaluation use, with the prefix of the
#: evaluation metrics of each: the trained policy and the two baselines.
DRIVERS = {"policy": "val", "pure_pursuit": "pursuit", "random": "random"}


def driver_for(name: str, policy: ActorCriticPolicy, actions: ActionSpace, seed: int
               ) -> Driver:
    """The driver named ``name`` (a key of DRIVERS)."""
    if name == "pure_pursuit":
        return pure_pursuit(actions)
    if name == "random":
        return random_driver(actions, seed)
    assert name == "policy", name
    return policy_driver(policy, actions)


def policy_driver(policy: ActorCriticPolicy, actions: ActionSpace, *,
                  deterministic: bool = True) -> Driver:
    """A lap driver (`training.models.racing.laps`) that asks ``policy``."""

    def drive(obs: np.ndarray, _: RaceEnv) -> tuple[float, float]:
        action, _state = policy.predict(obs, deterministic=deterministic)
        return actions.command(action)

    return drive


@dataclass(frozen=True)
class LoadedRacer:
    """What serving needs: the policy, what it sees and does, and the tracks it knows."""

    policy: ActorCriticPolicy
    cfg: RacerConfig
    tracks: dict[str, Track]  # the run's training and held-out tracks, by name

    @property
    def actions(self) -> ActionSpace:
        return self.cfg.actions()


def from_artifact(artifact: Artifact, device: str | torch.device = "cpu") -> LoadedRacer:
    names = {f.name for f in fields(RacerConfig)}
    try:
        cfg = RacerConfig(**{k: v for k, v in artifact.model_args.items() if k in names})
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{artifact.directory}: model_args do not fit this genkiln's "
                            f"racer ({exc}); re-export the model") from exc
    policy = build_policy(cfg)
    try:
        policy.load_state_dict(artifact.tensors(device="cpu"), strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{artifact.directory}: weights do not match model_args "
                            f"({' '.join(str(exc).split())[:300]})") from exc
    try:
        saved = json.loads(artifact.path(TRACKS_FILE).read_text(encoding="utf-8"))
        tracks = {t["name"]: track_from_json(t, source=f"{TRACKS_FILE} {t.get('name')}")
                  for t in saved}
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{artifact.directory}: {TRACKS_FILE} is missing or unreadable "
                            f"({exc}); re-export the model") from exc
    policy.set_training_mode(False)
    return LoadedRacer(policy=policy.to(device), cfg=cfg, tracks=tracks)


def model_args(cfg: RacerConfig) -> dict[str, Any]:
    return asdict(cfg)
