"""The racer through the real entry point, server and evaluation: training beats a random
driver, bad tracks and reward functions fail the job in one line, a stopped job resumes
exactly, the artifact serves `drive` and `lap`, and `genkiln evaluate` drives the laps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from tests.conftest import RACER_TINY
from training.artifact import load_artifact
from training.entry import run_training
from training.local import emulate_opt_ml
from training.models.racer import from_artifact
from training.models.racing.env import RaceEnv
from training.models.racing.tracks import bundled_tracks

GENKILN = [sys.executable, "-m", "genkiln"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "rewards"


def metrics_of(model_dir: Path) -> dict[str, float]:
    return json.loads((model_dir / "genkiln.json").read_text())["metrics"]


def test_a_few_updates_drive_far_beyond_a_random_policy(racer_artifact: Path) -> None:
    metrics = metrics_of(racer_artifact)
    assert metrics["random_completion_rate"] == 0.0 and metrics["random_progress"] < 15
    assert metrics["val_progress"] > metrics["random_progress"] + 30, metrics
    assert metrics["pursuit_completion_rate"] == 1.0
    assert (racer_artifact / "tracks.json").is_file()
    assert (racer_artifact / "samples" / "laps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_artifact_holds_the_trained_policy_and_no_pickle(racer_artifact: Path) -> None:
    loaded = from_artifact(load_artifact(racer_artifact))
    assert sorted(p.name for p in racer_artifact.iterdir()) == [
        "genkiln.json", "model.safetensors", "samples", "tracks.json"]
    env = RaceEnv([bundled_tracks()["oval"]])
    obs, _ = env.reset(seed=3)
    action, _ = loaded.policy.predict(obs, deterministic=True)
    weights = load_file(str(racer_artifact / "model.safetensors"))
    assert torch.equal(weights["action_net.weight"], loaded.policy.action_net.weight.detach())
    assert 0 <= int(action) < len(loaded.actions.table())
    assert set(loaded.tracks) == {"oval", "sbends", "hairpins", "heldout"}


def failed(tmp_path: Path, **channels: Path) -> str:
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters=RACER_TINY,
                            data=channels.pop("train", None), channels=channels or None)
    assert run_training(opt_ml) == 2
    reason = opt_ml.failure_path.read_text()
    assert "\n" not in reason.strip() and "Traceback" not in reason
    return reason


def test_a_bad_track_in_the_train_channel_fails_the_job_naming_it(tmp_path: Path) -> None:
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    (tracks / "good.json").write_text(json.dumps(bundled_tracks()["oval"].to_json()
                                                 | {"name": "good"}))
    half = bundled_tracks()["oval"].waypoints[:60].tolist()
    (tracks / "open.json").write_text(json.dumps({"width": 0.76, "waypoints": half}))
    reason = failed(tmp_path, train=tracks)
    assert reason.startswith("open.json: the track is open"), reason


def test_a_reward_function_that_raises_fails_the_job_with_its_line_and_params(
        tmp_path: Path) -> None:
    reward = tmp_path / "reward" / "my_reward.py"
    reward.parent.mkdir()
    reward.write_text("def reward_function(params):\n"
                      "    return params['progress'] / params['missing']\n")
    reason = failed(tmp_path, reward=reward.parent)
    assert reason.startswith("my_reward.py, line 2: reward_function raised KeyError: "
                             "'missing' (params: {'all_wheels_on_track': "), reason


def test_stopped_by_sigterm_a_racer_resumes_exactly(tmp_path: Path) -> None:
    settings = {**RACER_TINY, "max_steps": "6", "eval_interval": "100",
                "checkpoint_interval": "1", "log_interval": "1"}

    def tree(name: str) -> Path:
        root = tmp_path / name
        (root / "input/config").mkdir(parents=True)
        (root / "input/config/hyperparameters.json").write_text(json.dumps(settings))
        (root / "checkpoints").mkdir()
        return root

    straight = tree("straight")
    done = subprocess.run([*GENKILN, "train", "--opt-ml", str(straight)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    stopped = tree("stopped")
    process = subprocess.Popen([*GENKILN, "train", "--opt-ml", str(stopped)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("step=2 "):
            process.send_signal(signal.SIGTERM)
            break
    process.stdout.read()
    assert process.wait(timeout=120) == 143
    saved = json.loads((stopped / "checkpoints/checkpoint.json").read_text())["step"]
    assert 2 <= saved < 6
    (stopped / "output/failure").unlink()
    again = subprocess.run([*GENKILN, "train", "--opt-ml", str(stopped)], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from the checkpoint at step {saved}" in again.stdout
    finished = load_file(str(straight / "model/model.safetensors"))
    resumed = load_file(str(stopped / "model/model.safetensors"))
    assert finished.keys() == resumed.keys()
    for name, tensor in finished.items():
        assert torch.equal(tensor, resumed[name]), name


@pytest.mark.parametrize("example", ["follow_center_line.py", "stay_inside_borders.py",
                                     "prevent_zig_zag.py"])
def test_the_deepracer_guides_example_rewards_train_and_complete_laps(
        tmp_path: Path, example: str) -> None:
    """Reward functions as the DeepRacer developer guide prints them, unchanged."""
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", channels={"reward": DOCS / example},
                            hyperparameters={"family": "racer", "max_steps": "8",
                                             "eval_laps": "1", "eval_interval": "100",
                                             "seed": "7", "num_threads": "1"})
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    metrics = metrics_of(opt_ml.model_dir)
    assert metrics["val_completion_rate"] >= 0.8, metrics
    summary = json.loads((opt_ml.model_dir / "genkiln.json").read_text())["data"]
    assert summary["reward"]["file"] == example


# --- serving -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(racer_artifact: Path) -> Iterator[TestClient]:
    from inference.server import create_app

    with TestClient(create_app(racer_artifact)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield client


def invoke(client: TestClient, payload: Any, **headers: str) -> Any:
    return client.post("/invocations", json=payload, headers=headers)


def test_a_served_lap_is_the_lap_the_simulator_drives(server: TestClient) -> None:
    first = invoke(server, {"kind": "lap", "track": "heldout", "seed": 5}).json()
    again = invoke(server, {"kind": "lap", "track": "heldout", "seed": 5}).json()
    assert first["trajectory"] == again["trajectory"]
    assert first["track"]["name"] == "heldout" and first["hz"] == 15
    assert len(first["trajectory"]["x"]) == first["steps"] + 1
    assert first["picture"]
    pursuit = invoke(server, {"kind": "lap", "track": "oval", "driver": "pure_pursuit",
                              "reversed": True, "picture": False}).json()
    assert pursuit["completed"] and pursuit["reversed"] and "picture" not in pursuit
    assert 19 < pursuit["lap_time"] < 22
    custom = bundled_tracks()["sbends"].to_json() | {"name": "mine"}
    own = invoke(server, {"kind": "lap", "track": custom, "driver": "pure_pursuit"}).json()
    assert own["completed"] and own["track"]["name"] == "mine"
    png = invoke(server, {"kind": "lap", "track": "oval"}, Accept="image/png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_drive_answers_the_action_the_policy_takes(server: TestClient,
                                                   racer_artifact: Path) -> None:
    loaded = from_artifact(load_artifact(racer_artifact))
    env = RaceEnv([bundled_tracks()["sbends"]])
    obs, _ = env.reset(seed=2)
    expected, _ = loaded.policy.predict(obs, deterministic=True)
    as_list = invoke(server, {"kind": "drive", "observation": obs.tolist()}).json()
    as_scan = invoke(server, {"kind": "drive", "observation": {
        "rays": (obs[:-1] * 3.0).tolist(), "speed": float(obs[-1])}}).json()
    assert as_list["action"] == as_scan["action"] == int(expected)
    steering, speed = loaded.actions.table()[int(expected)]
    assert as_list["steering_angle"] == steering and as_list["speed"] == speed


@pytest.mark.parametrize(("payload", "message"), [
    ({"kind": "lap", "track": "monza"}, "track 'monza' is not known here; use one of"),
    ({"kind": "lap", "track": {"width": 0.76, "waypoints": [[0, 0], [1, 0], [1, 1]]}},
     "track 'custom': 3 distinct waypoints; a track needs at least 10"),
    ({"kind": "lap", "track": "oval", "laps": 3}, "laps: Extra inputs are not permitted"),
    ({"kind": "drive", "observation": [0.5, 0.5]}, "16 finite numbers); got 2"),
    ({"kind": "drive", "observation": {"image": "aGk="}}, "this racer drives by lidar"),
    ({"kind": "drive", "observation": {"rays": [1.0] * 3, "speed": 1.0}},
     "at least 15 items"),
    ({"kind": "sample"}, "kind 'sample' is not served by this racer model; use one of: "
                         "drive, lap"),
])
def test_bad_racer_requests_get_a_4xx_that_says_what_to_change(
        server: TestClient, payload: dict[str, Any], message: str) -> None:
    answer = invoke(server, payload)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["error"], answer.json()


def test_info_names_the_kinds_and_the_tracks(server: TestClient) -> None:
    info = server.get("/info").json()
    assert info["family"] == "racer" and info["kinds"] == ["lap", "drive"]
    assert info["playground"]["input"] == "track"
    assert set(info["playground"]["tracks"]) == {"oval", "sbends", "hairpins", "heldout"}


# --- evaluation --------------------------------------------------------------------------
def test_evaluate_drives_laps_beside_the_baselines(racer_artifact: Path,
                                                   tmp_path: Path) -> None:
    from training.evaluation.evaluate import evaluate_artifact, write_evaluation

    evaluation = evaluate_artifact(racer_artifact, log=lambda _: None)
    evaluation.register()
    json_path, report_path = write_evaluation(evaluation, tmp_path)
    saved = json.loads(json_path.read_text())
    for who in ("val", "pursuit", "random"):
        assert f"{who}_completion_rate" in saved["metrics"], who
        assert f"{who}_heldout_completion_rate" in saved["metrics"], who
    assert saved["baselines"]["val_completion_rate"] == ["pursuit_completion_rate",
                                                         "random_completion_rate"]
    assert saved["metrics"]["val_progress"]["value"] == pytest.approx(
        metrics_of(racer_artifact)["val_progress"])  # the laps training drove, again
    [table] = saved["tables"]
    assert len(table["rows"]) == 4 * 3  # every track, by each driver
    report = report_path.read_text()
    assert "Laps by track" in report and "mean episode reward by training step" in report
    assert report.count("data:image/png;base64,") == 1
    assert saved["registration"]["criterion"] == "val_completion_rate>=0.9"


def test_genkiln_train_takes_a_reward_file(tmp_path: Path) -> None:
    model = tmp_path / "model"
    done = subprocess.run([*GENKILN, "train", "--family", "racer", "--model-dir", str(model),
                           "--reward", str(DOCS / "follow_center_line.py"),
                           *[x for k, v in {**RACER_TINY, "max_steps": "1"}.items()
                             if k != "family" for x in (f"--{k}", v)]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reward follow_center_line.py" in done.stdout
    assert np.isfinite(metrics_of(model)["episode_reward"])


def test_a_camera_racer_trains_and_drives_from_a_picture(tmp_path: Path) -> None:
    import base64
    import io

    from PIL import Image

    from inference.server import create_app

    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters={
        **RACER_TINY, "sensor": "camera", "max_steps": "1", "num_episodes_between_training": "4"})
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    loaded = from_artifact(load_artifact(opt_ml.model_dir))
    env = RaceEnv([bundled_tracks()["hairpins"]], sensor="camera")
    obs, _ = env.reset(seed=4)
    expected, _ = loaded.policy.predict(obs, deterministic=True)
    png = io.BytesIO()
    Image.fromarray(obs[0]).save(png, format="PNG")
    with TestClient(create_app(opt_ml.model_dir)) as client:
        while client.get("/ping").status_code != 200:
            time.sleep(0.1)
        for image in (base64.b64encode(png.getvalue()).decode(), obs[0].tolist()):
            answer = invoke(client, {"kind": "drive", "observation": {"image": image}})
            assert answer.status_code == 200, answer.text
            assert answer.json()["action"] == int(expected)
        small = invoke(client, {"kind": "drive", "observation": {"image": [[0, 1], [2, 3]]}})
        assert small.status_code == 422
        assert "this racer's camera is 32×24" in small.json()["error"]


def test_environments_in_subprocesses_train_the_same_policy(tmp_path: Path) -> None:
    """vec_env only moves the environments: the rollouts, and so the weights, are the same."""
    weights = {}
    for kind in ("in_process", "subprocess"):  # each a job of its own, as on SageMaker
        opt_ml = emulate_opt_ml(tmp_path / kind, hyperparameters={
            **RACER_TINY, "max_steps": "2", "eval_interval": "100", "num_envs": "3",
            "vec_env": kind})
        done = subprocess.run([*GENKILN, "train", "--opt-ml", str(opt_ml.root)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        weights[kind] = load_file(str(opt_ml.model_dir / "model.safetensors"))
    for name, tensor in weights["in_process"].items():
        assert torch.equal(tensor, weights["subprocess"][name]), name


def test_a_reward_error_in_a_worker_process_fails_the_job_in_one_line(tmp_path: Path) -> None:
    reward = tmp_path / "reward" / "late.py"
    reward.parent.mkdir()
    reward.write_text("def reward_function(params):\n"
                      "    if params['steps'] > 5:\n"
                      "        return float('nan')\n"
                      "    return 1.0\n")
    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", channels={"reward": reward.parent},
                            hyperparameters={**RACER_TINY, "vec_env": "subprocess",
                                             "num_envs": "2"})
    assert run_training(opt_ml) == 2
    reason = opt_ml.failure_path.read_text()
    assert reason.startswith("late.py, line 3: reward_function returned nan; it must return "
                             "a finite number (params: {"), reason
    assert "'steps': 6" in reason


def test_a_continuous_racer_steers_and_sets_its_speed_within_its_ranges(
        tmp_path: Path) -> None:
    from inference.server import create_app

    opt_ml = emulate_opt_ml(tmp_path / "opt_ml", hyperparameters={
        **RACER_TINY, "action_space": "continuous", "max_speed": "2.0", "min_speed": "0.5",
        "max_steps": "1", "num_episodes_between_training": "4"})
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    with TestClient(create_app(opt_ml.model_dir)) as client:
        while client.get("/ping").status_code != 200:
            time.sleep(0.1)
        answer = invoke(client, {"kind": "drive", "observation": [0.5] * 16}).json()
        lap = invoke(client, {"kind": "lap", "track": "oval", "picture": False}).json()
    steering, speed = answer["action"]
    assert -1 <= steering <= 1 and -1 <= speed <= 1
    assert answer["steering_angle"] == pytest.approx(30.0 * steering, abs=1e-3)
    assert answer["speed"] == pytest.approx(0.5 + (speed + 1) / 2 * 1.5, abs=1e-3)
    assert max(lap["trajectory"]["speed"]) <= 2.0
    assert all(abs(a) <= 30.0 for a in lap["trajectory"]["steering_angle"])


def test_an_endpoint_is_evaluated_through_its_lap_requests(server: TestClient) -> None:
    from training.evaluation.evaluate import evaluate_endpoint

    class Client:  # what evaluate_endpoint asks of genkiln.client.EndpointClient
        def invoke(self, payload: dict[str, Any]) -> Any:
            answer = server.post("/invocations", json=payload)
            assert answer.status_code == 200, answer.text
            return answer.json()

    evaluation = evaluate_endpoint(Client(), family="racer", measured="test server")
    metrics = {k: v["value"] for k, v in evaluation.metrics.items()}
    assert metrics["pursuit_completion_rate"] == 1.0 and metrics["random_completion_rate"] == 0
    assert "val_heldout_completion_rate" in metrics and "pursuit_heldout_lap_time" in metrics
    [table] = evaluation.tables
    assert len(table.rows) == 4 * 3
