"""The racer's simulator, tracks and reward functions: geometry, determinism, and every way
a track or a reward function is refused."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.models.racing.car import MIN_TURN_RADIUS, ActionSpace, Car
from training.models.racing.env import RaceEnv, courses_of
from training.models.racing.laps import drive_lap, pure_pursuit, random_driver
from training.models.racing.reward import RewardError, load_reward
from training.models.racing.track import (
    TrackError,
    checked_track,
    read_track,
    read_tracks,
    track_from_json,
)
from training.models.racing.tracks import HELD_OUT, TRAINING, bundled_tracks

#: The keys of DeepRacer's documented reward-function params.
DEEPRACER_PARAMS = {
    "all_wheels_on_track", "x", "y", "closest_objects", "closest_waypoints",
    "distance_from_center", "is_crashed", "is_left_of_center", "is_offtrack", "is_reversed",
    "heading", "objects_distance", "objects_heading", "objects_left_of_center",
    "objects_location", "objects_speed", "progress", "speed", "steering_angle", "steps",
    "track_length", "track_width", "waypoints",
}


def circle(radius: float = 3.0, n: int = 60, width: float = 0.76) -> dict[str, object]:
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return {"name": "circle", "width": width,
            "waypoints": [[radius * math.cos(a), radius * math.sin(a)] for a in angles]}


# --- tracks -----------------------------------------------------------------------------
def test_bundled_tracks_are_valid_loops_with_one_held_out() -> None:
    tracks = bundled_tracks()
    assert set(TRAINING) | {HELD_OUT} == set(tracks) and HELD_OUT not in TRAINING
    for track in tracks.values():
        assert 15 < track.length < 40 and track.width == 0.76
        spacing = np.hypot(*track.segments.T)
        assert spacing.max() < 0.2  # about DeepRacer's waypoint spacing


def test_geometry_of_a_circle_track() -> None:
    track = track_from_json(circle(), source="circle.json")
    assert track.length == pytest.approx(2 * math.pi * 3, rel=1e-2)
    inside, outside = track.locate(np.array([2.8, 0.05])), track.locate(np.array([3.3, 0.05]))
    # Anticlockwise, the centre of the circle is to the driver's left.
    assert inside.offset == pytest.approx(0.2, abs=0.01) and outside.offset < 0
    left, right = track.borders()
    assert np.hypot(*left.T).mean() == pytest.approx(3 - 0.38, abs=0.01)
    assert np.hypot(*right.T).mean() == pytest.approx(3 + 0.38, abs=0.01)
    point, heading = track.point_at(track.length / 4)
    assert point == pytest.approx([0, 3], abs=0.05)
    assert math.cos(heading) == pytest.approx(-1, abs=0.01)  # heading west
    back = track.reversed()
    assert back.locate(np.array([2.8, 0.05])).offset < 0  # now on the right


@pytest.mark.parametrize(("change", "problem"), [
    ({"waypoints": [[0, 0], [1, 0], [1, 1]]}, "3 distinct waypoints; a track needs at least 10"),
    ({"width": 0.1}, "width 0.1 m is too narrow"),
    ({"width": "wide"}, "'width' must be the track's width in metres"),
    ({"waypoints": "abc"}, "'waypoints' must be a list of [x, y] pairs"),
    ({"lanes": 2}, "unknown keys ['lanes']"),
])
def test_a_bad_track_is_refused_naming_the_file_and_problem(change: dict[str, object],
                                                            problem: str) -> None:
    with pytest.raises(TrackError, match=r"^my\.json: ") as raised:
        track_from_json({**circle(), **change}, source="my.json")
    assert problem in str(raised.value)


def test_an_open_a_crossing_a_tight_and_an_overlapping_track_are_refused() -> None:
    arc = np.array([[3 * math.cos(a), 3 * math.sin(a)] for a in np.linspace(0, 4.5, 40)])
    with pytest.raises(TrackError, match="the track is open: its last waypoint"):
        checked_track("arc", arc, 0.76, source="arc.json")
    t = np.linspace(0, 2 * math.pi, 80, endpoint=False)
    figure_eight = np.stack([3 * np.sin(t), 3 * np.sin(t) * np.cos(t)], axis=1)
    with pytest.raises(TrackError, match="the centre line crosses itself near"):
        checked_track("eight", figure_eight, 0.5, source="eight.json")
    small = np.stack([0.25 * np.cos(t), 0.25 * np.sin(t)], axis=1)
    with pytest.raises(TrackError, match="tighter than 0.38 m"):
        checked_track("small", small, 0.76, source="small.json")
    # A long thin loop whose two straights are closer than the track is wide.
    hairpin = np.concatenate([np.stack([np.linspace(0, 6, 30), np.zeros(30)], axis=1),
                              [[6 + 0.5 * math.sin(a), 0.5 - 0.5 * math.cos(a)]
                               for a in np.linspace(0.2, math.pi - 0.2, 8)],
                              np.stack([np.linspace(6, 0, 30), np.ones(30)], axis=1),
                              [[-0.5 * math.sin(a), 0.5 + 0.5 * math.cos(a)]
                               for a in np.linspace(0.2, math.pi - 0.2, 8)]])
    with pytest.raises(TrackError, match="the track overlaps itself"):
        checked_track("thin", hairpin, 1.2, source="thin.json")


def test_a_folder_of_tracks_and_deepracer_routes(tmp_path: Path) -> None:
    (tmp_path / "circle.json").write_text(json.dumps(circle()))
    track = track_from_json(circle(4.0), source="x")
    left, right = track.borders()
    np.save(tmp_path / "route.npy", np.concatenate([track.waypoints, left, right], axis=1))
    tracks = read_tracks(tmp_path)
    assert [t.name for t in tracks] == ["circle", "route"]
    assert tracks[1].width == pytest.approx(0.76, abs=0.01)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TrackError, match=r"track files \(\.json or DeepRacer \.npy routes\); "
                                         r"found \['notes.txt'\]"):
        read_tracks(tmp_path)
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(TrackError, match=r"^broken\.json: not valid JSON"):
        read_tracks(tmp_path)
    (tmp_path / "broken.json").unlink()
    np.save(tmp_path / "flat.npy", np.zeros((10, 2)))
    with pytest.raises(TrackError, match=r"^flat\.npy: a DeepRacer route is an \(n, 6\) array"):
        read_track(tmp_path / "flat.npy")


# --- the car and the environment ---------------------------------------------------------
def test_the_car_turns_on_its_bicycle_circle_and_grip_caps_a_fast_turn() -> None:
    car = Car(0.0, 0.0, 0.0, speed=1.0)
    for _ in range(15 * 20):
        car.step(30.0, 1.0)
    assert abs(MIN_TURN_RADIUS - 0.286) < 0.001
    assert math.hypot(car.x, car.y - MIN_TURN_RADIUS) == pytest.approx(MIN_TURN_RADIUS,
                                                                       abs=0.01)
    fast = Car(0.0, 0.0, 0.0, speed=4.0)
    fast.step(30.0, 4.0)
    turned = abs(fast.heading)  # grip: at most 6 m/s² lateral, so 1.5 rad/s at 4 m/s
    assert turned == pytest.approx(6.0 / 4.0 / 15, rel=0.01)


def test_the_discrete_action_space_is_deepracers_default_table() -> None:
    actions = ActionSpace("discrete")
    assert actions.table() == [(-30.0, 0.5), (-30.0, 1.0), (-15.0, 0.5), (-15.0, 1.0),
                               (0.0, 0.5), (0.0, 1.0), (15.0, 0.5), (15.0, 1.0),
                               (30.0, 0.5), (30.0, 1.0)]
    continuous = ActionSpace("continuous", min_speed=0.5, max_speed=2.0)
    assert continuous.command(np.array([-1.0, 1.0])) == (-30.0, 2.0)
    assert continuous.command(np.array([0.5, -1.0])) == (15.0, 0.5)


def trajectory(seed: int) -> list[tuple[float, ...]]:
    env = RaceEnv(list(bundled_tracks().values()), reward=load_reward(None))
    obs, _ = env.reset(seed=seed)
    rows = []
    rng = np.random.default_rng(0)
    for _ in range(60):
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(10)))
        rows.append((env.car.x, env.car.y, reward, *obs))
        if terminated or truncated:
            obs, _ = env.reset()
    return rows


def test_the_same_seed_gives_the_same_episode() -> None:
    assert trajectory(3) == trajectory(3)
    assert trajectory(3) != trajectory(4)


def test_params_are_deepracers_and_progress_reversal_and_off_track_follow_the_car() -> None:
    seen: list[dict[str, object]] = []

    def record(params: dict[str, object]) -> float:
        seen.append(dict(params))
        return 1.0

    track = track_from_json(circle(), source="circle.json")
    env = RaceEnv([track], reward=record, both_directions=False, random_start=False,
                  start_noise=0.0)
    env.reset(seed=1)
    for _ in range(30):
        env.drive(0.0, 1.0)  # straight on: the circle bends away to the left
    assert set(seen[0]) == DEEPRACER_PARAMS
    first, last = seen[0], seen[-1]
    assert first["steps"] == 1 and last["steps"] == 30
    assert 0 < first["progress"] < last["progress"] < 20  # type: ignore[operator]
    assert first["is_reversed"] is False and first["is_crashed"] is False
    assert first["steering_angle"] == 0.0 and first["speed"] == 1.0
    assert first["track_width"] == 0.76 and first["waypoints"][0] == (3.0, 0.0)  # type: ignore[index]
    assert first["closest_waypoints"] == [0, 1]
    assert -180 <= first["heading"] <= 180  # type: ignore[operator]
    # Going straight from the circle's edge, the car drifts to the outside (its right).
    assert any(p["is_left_of_center"] is False and p["distance_from_center"] > 0.2
               for p in seen)
    assert seen[-1]["is_offtrack"] or any(p["is_offtrack"] for p in seen)

    env = RaceEnv([track], reward=record, random_start=False, start_noise=0.0)
    env.reset(seed=1, options={"course": 1})  # the reversed course
    seen.clear()
    env.drive(0.0, 1.0)
    assert seen[0]["is_reversed"] is True and seen[0]["progress"] > 0  # type: ignore[operator]


def test_turning_back_ends_the_episode() -> None:
    track = track_from_json(circle(), source="circle.json")
    env = RaceEnv([track], both_directions=False, random_start=False, start_noise=0.0)
    env.reset(seed=1)
    env.car.heading += math.pi  # facing against the track
    done = False
    for _ in range(60):
        _, _, done, _, info = env.drive(0.0, 1.0)
        if done:
            break
    assert done and not info["completed"] and env.travelled < -1.0


def test_pure_pursuit_laps_every_bundled_track_and_a_random_policy_does_not() -> None:
    actions = ActionSpace("discrete")
    for course in courses_of(list(bundled_tracks().values()), True):
        lap = drive_lap(course, pure_pursuit(actions), sensor="lidar", actions=actions, seed=1)
        assert lap.completed and not lap.off_track, lap
        assert lap.seconds == pytest.approx(course.track.length / 1.0, rel=0.05)
        random = drive_lap(course, random_driver(actions, 1), sensor="lidar",
                           actions=actions, seed=1)
        assert not random.completed and random.progress < 50


def test_the_camera_sees_the_track_ahead() -> None:
    env = RaceEnv([bundled_tracks()["oval"]], sensor="camera", random_start=False,
                  start_noise=0.0)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (1, 24, 32) and obs.dtype == np.uint8
    bottom = obs[0, -1]
    assert bottom[16] >= 100  # tarmac (or the centre line) straight ahead
    assert (obs == 250).any()  # a border in view


# --- reward functions -------------------------------------------------------------------
def reward_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "reward.py"
    path.write_text(body)
    return path


PARAMS = {"speed": 1.0, "distance_from_center": 0.1, "waypoints": [(0.0, 0.0)] * 100}


@pytest.mark.parametrize(("body", "message"), [
    ("x = 1\n", r"reward\.py: defines no reward_function\(params\)"),
    ("def reward_function(params)\n    return 1.0\n", r"reward\.py, line 1: expected ':'"),
    ("import no_such_module\n", r"reward\.py, line 1: loading it raised ModuleNotFoundError"),
])
def test_a_reward_file_that_cannot_be_used_is_refused(tmp_path: Path, body: str,
                                                      message: str) -> None:
    with pytest.raises(RewardError, match=message):
        load_reward(reward_file(tmp_path, body))


def test_a_missing_reward_file_or_a_folder_without_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RewardError, match="no such file"):
        load_reward(tmp_path / "nope.py")
    with pytest.raises(RewardError, match=r"holds one Python file .*found 0 \(none\)"):
        load_reward(tmp_path)


def test_a_reward_function_that_raises_names_its_line_and_the_params(tmp_path: Path) -> None:
    reward = load_reward(reward_file(tmp_path, "def reward_function(params):\n"
                                               "    speed = params['speed']\n"
                                               "    return params['velocity'] * speed\n"))
    with pytest.raises(RewardError) as raised:
        reward(dict(PARAMS))
    message = str(raised.value)
    assert message.startswith("reward.py, line 3: reward_function raised KeyError: "
                              "'velocity' (params: {")
    assert "'speed': 1.0" in message and "waypoints" not in message  # the long one left out
    assert "\n" not in message


@pytest.mark.parametrize("returned", ["float('nan')", "'fast'", "None", "float('inf')",
                                      "True"])
def test_a_reward_that_is_not_a_finite_number_names_the_return_line(
        tmp_path: Path, returned: str) -> None:
    reward = load_reward(reward_file(tmp_path, "def reward_function(params):\n"
                                               "    if params['speed'] > 2:\n"
                                               "        return 1.0\n"
                                               f"    return {returned}\n"))
    with pytest.raises(RewardError, match=r"^reward\.py, line 4: reward_function returned "
                                          r".*; it must return a finite number \(params: "):
        reward(dict(PARAMS))


def test_the_default_reward_pays_for_progress_near_the_centre() -> None:
    track = bundled_tracks()["oval"]
    seen: list[float] = []
    reward = load_reward(None)
    env = RaceEnv([track], reward=lambda p: seen.append(reward(p)) or seen[-1],
                  both_directions=False, random_start=False, start_noise=0.0)
    env.reset(seed=1)
    for _ in range(20):
        env.drive(0.0, 1.0)
    fast = sum(seen)
    seen.clear()
    env.reset(seed=1)
    for _ in range(20):
        env.drive(0.0, 0.5)
    assert fast > 1.5 * sum(seen)  # twice as fast, nearly twice the reward


def test_huber_replaces_the_value_loss_of_sb3s_ppo_update() -> None:
    import stable_baselines3.ppo.ppo as ppo_module
    from stable_baselines3 import PPO

    from training.recipes.racer import _value_loss

    assert "F.mse_loss(rollout_data.returns, values_pred)" in inspect.getsource(PPO.train)
    target, prediction = torch.tensor([0.0, 0.0]), torch.tensor([3.0, 0.5])
    with _value_loss("huber"):
        huber = ppo_module.F.mse_loss(target, prediction)
    with _value_loss("mean_squared_error"):
        squared = ppo_module.F.mse_loss(target, prediction)
    assert float(huber) == pytest.approx((2.5 + 0.125) / 2)
    assert float(squared) == pytest.approx((9 + 0.25) / 2)
    assert ppo_module.F is torch.nn.functional
