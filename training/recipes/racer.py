"""Training recipe of the racer: PPO on a reward function, as DeepRacer trains a car.

One training step is one of DeepRacer's policy-updating iterations: the environments drive
until `num_episodes_between_training` episodes have ended, then Stable-Baselines3's PPO
update makes `num_epochs` passes over that experience in batches of `batch_size`. Every
iteration starts its episodes afresh from seeds of (seed, iteration), so the state a
resumed run needs is the policy, its optimizer, torch's random state and the iteration
count: a run stopped by SIGTERM resumes exactly.

Evaluation drives DeepRacer-style laps (`training.models.racing.laps`) on every training
track and the held-out one, beside a pure-pursuit controller and a random policy driven
the same way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from torch import nn
from torch.nn import functional as F

from training import checkpoint
from training.artifact import write_artifact
from training.config import TrainConfig
from training.models.racer import (
    DRIVERS,
    FAMILY,
    TRACKS_FILE,
    RacerConfig,
    driver_for,
    model_args,
    policy_arguments,
)
from training.models.racing.env import courses_of, training_env
from training.models.racing.laps import Lap, drive_lap, lap_figures
from training.models.racing.picture import track_picture
from training.models.racing.reward import RewardError, RewardFunction, load_reward
from training.models.racing.track import Track, TrackError, read_tracks
from training.models.racing.tracks import bundled_tracks
from training.threads import usable_cores

PICTURE = "samples/laps.png"


class Progress(nn.Module):
    """The iteration count, kept as a buffer so checkpoints and the thread probe's
    undo carry it with the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("iterations", torch.zeros((), dtype=torch.int64))
        self.iterations: torch.Tensor


def _bundled(names: str, what: str) -> list[Track]:
    tracks = bundled_tracks()
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in tracks]
    if unknown or not chosen:
        raise TrackError(f"{what}: bundled tracks are {', '.join(tracks)}; got "
                         f"{names!r}")
    return [tracks[n] for n in chosen]


@contextlib.contextmanager
def _value_loss(kind: str) -> Iterator[None]:
    """SB3's PPO scores its value head by mean squared error; DeepRacer offers Huber too
    (its default). Its `train()` reads `F.mse_loss` from its module, so Huber is swapped
    in there for the update (tests/unit/test_racer.py checks it takes effect)."""
    import stable_baselines3.ppo.ppo as ppo_module

    if kind != "huber":
        yield
        return

    class Huber:
        def __getattr__(self, name: str) -> Any:
            return getattr(F, name)

        @staticmethod
        def mse_loss(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
            return F.smooth_l1_loss(prediction, target)

    saved = ppo_module.F
    ppo_module.F = Huber()  # type: ignore[assignment]
    try:
        yield
    finally:
        ppo_module.F = saved


#: Hosts with this many cores step the environments in processes of their own (vec_env
#: auto); on fewer, the processes' messages cost more than they save (docs/families.md).
SUBPROCESS_CORES = 4


class Recipe:
    family = FAMILY
    modality = "track"
    tokenizer = None

    def __init__(self, run: TrainConfig, model_cfg: RacerConfig, *, train_dir: Path | None,
                 validation_dir: Path | None, device: torch.device,
                 log: Callable[[str], None] = print, reward: Path | None = None) -> None:
        self.run, self.cfg, self.device, self.log = run, model_cfg, device, log
        self.tracks = (read_tracks(train_dir) if train_dir is not None
                       else _bundled(model_cfg.tracks, "tracks"))
        self.held_out = (read_tracks(validation_dir) if validation_dir is not None
                         else _bundled(model_cfg.held_out_track, "held_out_track"))
        clash = {t.name for t in self.tracks} & {t.name for t in self.held_out}
        if clash:
            raise TrackError(f"tracks {sorted(clash)} are both trained on and held out; "
                             f"hold out other tracks")
        self.reward: RewardFunction = load_reward(reward)
        self.actions = model_cfg.actions()
        log(f"racer: training on {', '.join(t.name for t in self.tracks)} "
            f"({'both ways' if model_cfg.both_directions else 'one way'}), held out "
            f"{', '.join(t.name for t in self.held_out)}; reward {self.reward.source}; "
            f"sensor {model_cfg.sensor}, {model_cfg.action_space} actions")
        self.data_summary = self._summary(train_dir)
        self.make_env = functools.partial(training_env, self.tracks, sensor=model_cfg.sensor,
                                          actions=self.actions, reward=reward,
                                          both_directions=model_cfg.both_directions)
        self._envs: VecEnv | None = None  # made when training starts (`envs`)
        # SB3's PPO holds the policy and makes the update; the rollouts are collected here
        # (`_collect`), so each update sees whole episodes, as DeepRacer's do. PPO reads
        # the spaces from one environment; evaluation and rebuilds never make the others.
        self.ppo = PPO(ActorCriticPolicy, DummyVecEnv([self.make_env]),
                       learning_rate=run.learning_rate,
                       n_steps=run.batch_size,
                       batch_size=run.batch_size, n_epochs=model_cfg.num_epochs,
                       gamma=model_cfg.discount_factor, gae_lambda=model_cfg.gae_lambda,
                       clip_range=model_cfg.clip_range, ent_coef=model_cfg.beta_entropy,
                       max_grad_norm=run.grad_clip or math.inf, seed=run.seed,
                       policy_kwargs=policy_arguments(model_cfg), device=device)
        self.ppo.set_logger(configure(None, []))
        self.model = self.ppo.policy
        self.progress = Progress()
        self._references: dict[str, float] | None = None
        self.last_laps: list[Lap] = []

    # --- data ------------------------------------------------------------------------------
    @property
    def envs(self) -> VecEnv:
        """The rollouts' environments, stepped in this process or one process each
        (`vec_env`), made the first time they are needed."""
        if self._envs is None:
            makers: list[Callable[[], gym.Env[Any, Any]]] = [self.make_env] * self.cfg.num_envs
            kind = self.cfg.vec_env
            if kind == "auto":
                kind = "subprocess" if usable_cores() >= SUBPROCESS_CORES else "in_process"
            if kind == "subprocess":
                self.log(f"racer: {len(makers)} environments in as many processes")
                self._envs = SubprocVecEnv(makers, start_method="spawn")
            else:
                self._envs = DummyVecEnv(makers)
        return self._envs

    def _summary(self, train_dir: Path | None) -> dict[str, Any]:
        digest = hashlib.sha256(self.reward.path.read_bytes()).hexdigest()
        return {"source": str(train_dir) if train_dir is not None else
                f"bundled tracks {','.join(t.name for t in self.tracks)}",
                "tracks": {t.name: {"length_m": round(t.length, 2), "width_m": t.width,
                                    "waypoints": len(t.waypoints)} for t in self.tracks},
                "held_out": [t.name for t in self.held_out],
                "reward": {"file": self.reward.source, "sha256": digest}}

    # --- training ----------------------------------------------------------------------
    def state_objects(self) -> Mapping[str, checkpoint.Stateful]:
        return {"policy": self.model, "optimizer": self.model.optimizer,
                "progress": self.progress}

    def _collect(self, iteration: int) -> tuple[RolloutBuffer, dict[str, float]]:
        """Drive every environment until enough episodes have ended: the experience."""
        envs, policy, cfg = self.envs, self.model, self.cfg
        for i in range(envs.num_envs):
            envs.env_method("reset", seed=self.run.seed * 1_000_003 + iteration * 1009 + i,
                            indices=[i])
        obs: Any = np.stack(envs.env_method("observe"))
        rows: list[tuple[Any, ...]] = []
        starts = np.ones(envs.num_envs, dtype=np.float32)
        ended: list[dict[str, float]] = []
        totals = np.zeros(envs.num_envs)
        policy.set_training_mode(False)
        while len(ended) < cfg.num_episodes_between_training:
            with torch.no_grad():
                actions, values, log_probs = policy(torch.as_tensor(obs, device=self.device))
            chosen = actions.cpu().numpy()
            stepped = chosen
            if cfg.action_space == "continuous":
                stepped = np.clip(chosen, -1.0, 1.0)
            new_obs, rewards, dones, infos = envs.step(stepped)
            failures = [info["reward_error"] for info in infos if "reward_error" in info]
            if failures:
                raise RewardError(failures[0])
            for k, info in enumerate(infos):
                if info.get("TimeLimit.truncated") and "terminal_observation" in info:
                    # A timed-out episode did not end: its value carries on (bootstrap).
                    terminal = torch.as_tensor(info["terminal_observation"][None],
                                               device=self.device)
                    with torch.no_grad():
                        rewards[k] += cfg.discount_factor * float(
                            policy.predict_values(terminal)[0, 0])
            totals += rewards
            for done in np.flatnonzero(dones):
                ended.append({"reward": float(totals[done]),
                              "progress": float(infos[done]["progress"]),
                              "completed": float(infos[done]["completed"])})
                totals[done] = 0.0
            rows.append((obs, chosen, rewards, starts, values, log_probs))
            obs, starts = new_obs, dones.astype(np.float32)
        buffer = RolloutBuffer(len(rows), envs.observation_space, envs.action_space,
                               device=self.device, gamma=cfg.discount_factor,
                               gae_lambda=cfg.gae_lambda, n_envs=envs.num_envs)
        for obs_k, act_k, rew_k, start_k, val_k, logp_k in rows:
            buffer.add(obs_k, act_k, rew_k, start_k, val_k, logp_k)
        with torch.no_grad():
            last = policy.predict_values(torch.as_tensor(obs, device=self.device))
        buffer.compute_returns_and_advantage(last_values=last, dones=starts)
        stats = {"episode_reward": float(np.mean([e["reward"] for e in ended])),
                 "episode_progress": float(np.mean([e["progress"] for e in ended])),
                 "episode_completion": float(np.mean([e["completed"] for e in ended]))}
        return buffer, {**stats, "transitions": float(len(rows) * envs.num_envs)}

    def train_step(self, lr: float) -> dict[str, float]:
        iteration = int(self.progress.iterations)
        buffer, stats = self._collect(iteration)
        self.ppo.rollout_buffer = buffer
        self.ppo.lr_schedule = lambda _: lr
        # SB3 draws its minibatches from NumPy's global generator: seed it per iteration.
        np.random.seed((self.run.seed * 7919 + iteration) % 2**32)
        with _value_loss(self.cfg.loss_type):
            self.ppo.train()
        self.progress.iterations += 1
        logged = self.ppo.logger.name_to_value
        return {**stats, "policy_loss": float(logged["train/policy_gradient_loss"]),
                "value_loss": float(logged["train/value_loss"]),
                "entropy": -float(logged["train/entropy_loss"])}

    # --- evaluation --------------------------------------------------------------------
    def laps(self, driver_name: str) -> list[Lap]:
        """Evaluation laps by one driver on every training and held-out course."""
        cfg, actions = self.cfg, self.actions
        out = []
        for course in courses_of([*self.tracks, *self.held_out], cfg.both_directions):
            for k in range(cfg.eval_laps):
                seed = self.run.seed + 101 * k
                driver = driver_for(driver_name, self.model, actions, seed)
                out.append(drive_lap(course, driver, sensor=cfg.sensor, actions=actions,
                                     seed=seed))
        return out

    def lap_metrics(self, laps: list[Lap], prefix: str) -> dict[str, float]:
        return lap_figures(laps, prefix, {t.name for t in self.held_out})

    @property
    def references(self) -> dict[str, float]:
        """The baselines, driven once: pure pursuit and the random policy."""
        if self._references is None:
            self._references = {}
            for name in ("pure_pursuit", "random"):
                self._references.update(self.lap_metrics(self.laps(name), DRIVERS[name]))
        return self._references

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.set_training_mode(False)
        self.last_laps = self.laps("policy")
        metrics = self.lap_metrics(self.last_laps, "val")
        pursuit = self.references.get("pursuit_lap_time")
        if "val_lap_time" in metrics and pursuit:
            metrics["val_lap_time_ratio"] = metrics["val_lap_time"] / pursuit
        return metrics

    def picture_laps(self, laps: list[Lap]) -> list[tuple[Track, list[Lap]]]:
        """Each track with its laps driven the way its waypoints run, for a picture."""
        return [(track, [lap for lap in laps if lap.track == track.name and not lap.reversed])
                for track in [*self.tracks, *self.held_out]]

    # --- the artifact ------------------------------------------------------------------
    def export(self, directory: Path, *, config: dict[str, object],
               metrics: dict[str, float]) -> None:
        laps = self.last_laps or self.laps("policy")
        with tempfile.TemporaryDirectory() as tmp:
            tracks = Path(tmp) / TRACKS_FILE
            tracks.write_text(json.dumps([t.to_json() for t in [*self.tracks,
                                                                *self.held_out]]))
            picture = Path(tmp) / "laps.png"
            picture.write_bytes(track_picture(self.picture_laps(laps)))
            write_artifact(directory, family=FAMILY, modality=self.modality, config=config,
                           model_args=model_args(self.cfg),
                           tensors=self.model.state_dict(), data=self.data_summary,
                           metrics={**self.references, **metrics},
                           extra_files={TRACKS_FILE: tracks, PICTURE: picture})
