"""Serving the racer: what a car asks at 15 Hz, and whole laps to watch.

    {"kind": "drive", "observation": {"rays": [metres, ...], "speed": 0.8}}   # lidar
    {"kind": "drive", "observation": {"image": "<base64 PNG>"}}               # camera
    -> {"kind": "drive", "action": 7, "steering_angle": 15.0, "speed": 1.0}

    {"kind": "lap", "track": "heldout" | {"width": 0.76, "waypoints": [[x, y], ...]},
     "seed": 1, "reversed": false, "driver": "policy" | "pure_pursuit" | "random"}
    -> {"kind": "lap", "track": {...geometry...}, "completed": true, "lap_time": 21.0,
        "off_track": false, "progress": 100.0, "mean_speed": 0.95, "hz": 15,
        "trajectory": {"x": [...], "y": [...], "speed": [...], "steering_angle": [...]},
        "picture": "<base64 PNG>"}

`observation` may also be the policy's own input as a flat list (the rays over the lidar's
range, then the speed over the top speed). `Accept: image/png` answers a lap with its
picture. The same seed gives the same lap.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import ClientError, from_validation_error
from inference.handlers.contract import Binary, Description, Handler
from inference.seeds import fresh_seed
from inference.settings import DEFAULTS, ServingSettings
from training.artifact import Artifact
from training.models.racer import driver_for, from_artifact
from training.models.racing.car import HZ
from training.models.racing.env import Course
from training.models.racing.laps import drive_lap
from training.models.racing.picture import track_picture
from training.models.racing.sensors import CAMERA_SHAPE, LIDAR_RANGE, LIDAR_RAYS
from training.models.racing.track import TrackError, track_from_json
from training.models.racing.tracks import bundled_tracks

PNG = "image/png"
#: The longest lap a request may drive, in simulated seconds.
MAX_LAP_SECONDS = 180.0


class Lidar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rays: list[float] = Field(min_length=LIDAR_RAYS, max_length=LIDAR_RAYS,
                              description=f"{LIDAR_RAYS} distances (m) to the track's "
                                          f"borders, from 90° right to 90° left")
    speed: float = Field(ge=0.0, le=10.0, description="the car's speed, m/s")


class Camera(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str | list[list[int]] = Field(
        description=f"the front camera's {CAMERA_SHAPE[0]}×{CAMERA_SHAPE[1]} grayscale "
                    f"picture: base64 PNG, or rows of 0-255 values")


class DriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["drive"] = "drive"
    observation: Lidar | Camera | list[float]
    deterministic: bool = Field(True, description="the likeliest action; false samples one")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class TrackShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("custom", min_length=1, max_length=100)
    width: float
    waypoints: list[tuple[float, float]] = Field(max_length=5000)


class LapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["lap"] = "lap"
    track: str | TrackShape = Field(description="a track's name (GET /info lists them), or "
                                                "a track: width and waypoints")
    reversed: bool = Field(False, description="drive it the other way round")
    driver: Literal["policy", "pure_pursuit", "random"] = "policy"
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="same seed, same lap")
    picture: bool = Field(True, description="include a PNG of the lap")


VALID_KEYS = {"body": sorted({*DriveRequest.model_fields, *LapRequest.model_fields})}


@dataclass(frozen=True)
class Decoded:
    request: DriveRequest | LapRequest
    seed: int
    png: bool
    observation: np.ndarray | None = None
    course: Course | None = None


def _rounded(values: np.ndarray, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in values]


class RacerHandler(Handler):
    family = "racer"

    def __init__(self, artifact: Artifact, device: str = "cpu",
                 settings: ServingSettings = DEFAULTS) -> None:
        loaded = from_artifact(artifact, device)
        self.policy, self.cfg, self.device = loaded.policy, loaded.cfg, device
        self.actions = loaded.actions
        self.tracks = {**bundled_tracks(), **loaded.tracks}

    # --- requests ----------------------------------------------------------------------
    def decode(self, payload: Any, accept: str | None = None) -> Decoded:
        if not isinstance(payload, dict):
            raise ClientError('send a JSON object: {"kind": "lap", "track": "oval"} or '
                              '{"kind": "drive", "observation": {...}}')
        kind = payload.get("kind", "drive" if "observation" in payload else "lap")
        if kind not in ("drive", "lap"):
            raise ClientError(f"kind {kind!r} is not served by this racer model; use one of: "
                              f"drive, lap")
        model = DriveRequest if kind == "drive" else LapRequest
        try:
            request = model.model_validate({**payload, "kind": kind})
        except ValidationError as exc:
            raise from_validation_error(exc, valid=VALID_KEYS) from None
        seed = request.seed if request.seed is not None else fresh_seed(2**31)
        png = PNG in (accept or "").lower()
        if isinstance(request, DriveRequest):
            return Decoded(request, seed, png, observation=self._observation(request))
        return Decoded(request, seed, png, course=self._course(request))

    def _observation(self, request: DriveRequest) -> np.ndarray:
        given, sensor = request.observation, self.cfg.sensor
        if sensor == "lidar":
            if isinstance(given, Camera):
                raise ClientError("this racer drives by lidar: send observation "
                                  '{"rays": [...], "speed": ...}')
            if isinstance(given, Lidar):
                rays = np.clip(np.asarray(given.rays, dtype=np.float32) / LIDAR_RANGE, 0, 1)
                speed = min(1.0, given.speed / self.cfg.max_speed)
                return np.append(rays, np.float32(speed)).astype(np.float32)
            vector = np.asarray(given, dtype=np.float32)
            if vector.shape != (LIDAR_RAYS + 1,) or not np.isfinite(vector).all():
                raise ClientError(f"observation as a list is the policy's input: "
                                  f"{LIDAR_RAYS} rays over {LIDAR_RANGE:g} m, then the speed "
                                  f"over {self.cfg.max_speed:g} m/s ({LIDAR_RAYS + 1} finite "
                                  f"numbers); got {vector.shape[0]}")
            return np.clip(vector, 0.0, 1.0)
        if not isinstance(given, Camera):
            raise ClientError('this racer drives by camera: send observation {"image": '
                              '"<base64 PNG>"}')
        return _camera_image(given.image)[None]

    def _course(self, request: LapRequest) -> Course:
        if isinstance(request.track, str):
            track = self.tracks.get(request.track)
            if track is None:
                raise ClientError(f"track {request.track!r} is not known here; use one of "
                                  f"{', '.join(sorted(self.tracks))}, or send a track's "
                                  f"width and waypoints")
        else:
            try:
                track = track_from_json(request.track.model_dump(mode="json"),
                                        source=f"track {request.track.name!r}")
            except TrackError as exc:
                raise ClientError(str(exc)) from None
        return Course.of(track, request.reversed)

    # --- answers -----------------------------------------------------------------------
    def predict(self, decoded: Decoded) -> Any:
        if isinstance(decoded.request, DriveRequest):
            return self._drive(decoded)
        return self._lap(decoded)

    def _drive(self, decoded: Decoded) -> dict[str, Any]:
        assert decoded.observation is not None and isinstance(decoded.request, DriveRequest)
        if not decoded.request.deterministic:
            torch.manual_seed(decoded.seed)
        with torch.inference_mode():
            action, _ = self.policy.predict(decoded.observation,
                                            deterministic=decoded.request.deterministic)
        steering, speed = self.actions.command(action)
        chosen: int | list[float] = (int(np.asarray(action).reshape(-1)[0])
                                     if self.cfg.action_space == "discrete"
                                     else _rounded(np.clip(action, -1, 1), 5))
        return {"kind": "drive", "action": chosen, "steering_angle": round(steering, 4),
                "speed": round(speed, 4), "seed": decoded.seed}

    def _lap(self, decoded: Decoded) -> Any:
        assert decoded.course is not None and isinstance(decoded.request, LapRequest)
        course, request = decoded.course, decoded.request
        with torch.inference_mode():
            lap = drive_lap(course, driver_for(request.driver, self.policy, self.actions,
                                               decoded.seed), sensor=self.cfg.sensor,
                            actions=self.actions, seed=decoded.seed,
                            max_seconds=MAX_LAP_SECONDS)
        picture = (track_picture([(course.track, [lap])], columns=1)
                   if request.picture or decoded.png else b"")
        if decoded.png:
            return Binary(picture, PNG)
        left, right = course.track.borders()
        t = lap.trajectory
        answer: dict[str, Any] = {
            "kind": "lap", "seed": decoded.seed, "driver": request.driver,
            **lap.to_json(), "steps": len(t) - 1, "hz": HZ,
            "track": {"name": course.track.name, "width": course.track.width,
                      "length": round(course.track.length, 3),
                      "waypoints": course.track.to_json()["waypoints"],
                      "left": np.round(left, 3).tolist(), "right": np.round(right, 3).tolist()},
            "trajectory": {"x": _rounded(t[:, 0]), "y": _rounded(t[:, 1]),
                           "speed": _rounded(t[:, 2]), "steering_angle": _rounded(t[:, 3], 2)},
        }
        if picture:
            answer["picture"] = base64.b64encode(picture).decode("ascii")
        return answer

    # --- the rest of the contract ------------------------------------------------------
    def probe(self) -> None:
        """One policy decision on an empty scan: what the server times to fit threads."""
        shape = self.policy.observation_space.shape
        assert shape is not None
        with torch.inference_mode():
            self.policy.predict(np.zeros(shape, dtype=self.policy.observation_space.dtype),
                                deterministic=True)

    def request_models(self) -> list[type[BaseModel]]:
        return [DriveRequest, LapRequest]

    def smoke_request(self) -> dict[str, Any]:
        return {"kind": "lap", "track": "oval", "seed": 1, "picture": False}

    def describe(self) -> Description:
        """The playground picks (or uploads) a track and animates the lap driven on it."""
        return Description(kinds=("lap", "drive"), playground={
            "input": "track", "input_field": "track", "stream": False, "output": "lap",
            "tracks": sorted(self.tracks), "template": {"kind": "lap", "seed": 1}})


def _camera_image(value: str | list[list[int]]) -> np.ndarray:
    rows, cols = CAMERA_SHAPE
    if isinstance(value, str):
        data = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
                pixels = np.array(image.convert("L"), dtype=np.uint8)  # writable: torch wants it
        except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
            raise ClientError("observation.image: not a base64 PNG or JPEG") from None
    else:
        pixels = np.asarray(value)
        if pixels.ndim != 2 or not np.issubdtype(pixels.dtype, np.integer) \
                or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
            raise ClientError(f"observation.image as lists is {rows} rows of {cols} values "
                              f"from 0 to 255")
        pixels = pixels.astype(np.uint8)
    if pixels.shape != (rows, cols):
        raise ClientError(f"observation.image is {pixels.shape[1] if pixels.ndim > 1 else '?'}"
                          f"×{pixels.shape[0]} pixels; this racer's camera is {cols}×{rows}")
    return pixels
