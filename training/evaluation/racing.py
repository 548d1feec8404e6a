"""The racer's evaluation, as DeepRacer's evaluation runs: laps on every track.

Each driver (the trained policy, pure pursuit, a random policy) drives `eval_laps` laps a
track and direction, on the training tracks and the held-out one; the figures are the
completion rate, the mean lap time of completed laps, the off-track rate and the mean
speed, overall and per track. An endpoint is evaluated through its `lap` requests, on the
bundled tracks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.evaluation.results import Evaluation, Table
from training.models.racer import DRIVERS
from training.models.racing.laps import Lap, lap_figures, summarise
from training.models.racing.picture import track_picture
from training.recipes.racer import Recipe as RacerRecipe

#: How the report names each driver.
NAMES = {"policy": "trained policy", "pure_pursuit": "pure pursuit", "random": "random policy"}


def _cell(figures: dict[str, float], name: str, digits: int = 2) -> str:
    value = figures.get(name)
    return "—" if value is None else f"{value:.{digits}f}"


def lap_table(laps_by_driver: dict[str, list[Lap]], tracks: Sequence[str],
              held_out: set[str]) -> Table:
    """Per track and driver: completion, lap time, off-track rate, mean speed."""
    rows = []
    for track in tracks:
        for driver, laps in laps_by_driver.items():
            driven = [lap for lap in laps if lap.track == track]
            figures = summarise(driven)
            rows.append([f"{track}{' (held out)' if track in held_out else ''}",
                         NAMES[driver], f"{figures['completion_rate']:.0%}",
                         _cell(figures, "lap_time", 1),
                         f"{sum(lap.off_track for lap in driven)} of {len(driven)}",
                         _cell(figures, "mean_speed"), _cell(figures, "progress", 0)])
    return Table(title="Laps by track", header=["track", "driver", "completed", "lap time (s)",
                                                 "off-track laps", "mean speed (m/s)",
                                                 "progress (%)"], rows=rows)


def lap_metrics(recipe: RacerRecipe, out: Evaluation) -> None:
    """An artifact's laps beside the baselines', with a table and pictures."""
    recipe.model.set_training_mode(False)
    laps = {driver: recipe.laps(driver) for driver in DRIVERS}
    for driver, driven in laps.items():
        for name, value in recipe.lap_metrics(driven, DRIVERS[driver]).items():
            out.put(name, value)
    pursuit, policy = out.metrics.get("pursuit_lap_time"), out.metrics.get("val_lap_time")
    if pursuit and policy:
        out.put("val_lap_time_ratio", policy["value"] / pursuit["value"])
    names = [t.name for t in [*recipe.tracks, *recipe.held_out]]
    out.tables.append(lap_table(laps, names, {t.name for t in recipe.held_out}))
    out.pictures.append(("laps of the trained policy, coloured by speed (blue slow, red "
                         "fast)", track_picture(recipe.picture_laps(laps["policy"]))))
    out.notes.append(f"{recipe.cfg.eval_laps} lap(s) a track and direction from the start "
                     f"line, each a little off the centre line as drawn from its seed; a "
                     f"lap ends complete, off track (the car's centre over a border), "
                     f"turned back or timed out")


def endpoint_laps(client: Any, out: Evaluation, *, laps: int = 3) -> None:
    """Laps driven by an endpoint (its `lap` requests) on every bundled track."""
    from training.models.racing.tracks import HELD_OUT, bundled_tracks

    by_driver: dict[str, list[Lap]] = {}
    for driver in DRIVERS:
        driven = []
        for name in bundled_tracks():
            for reversed_ in (False, True):
                for k in range(laps):
                    answer = client.invoke({"kind": "lap", "track": name, "seed": 1 + 101 * k,
                                            "reversed": reversed_, "driver": driver,
                                            "picture": False})
                    t = answer["trajectory"]
                    driven.append(Lap(track=name, reversed=reversed_,
                                      completed=bool(answer["completed"]),
                                      off_track=bool(answer["off_track"]),
                                      progress=float(answer["progress"]),
                                      seconds=float(answer["steps"]) / float(answer["hz"]),
                                      mean_speed=float(answer["mean_speed"]),
                                      trajectory=np.stack([t["x"], t["y"], t["speed"],
                                                           t["steering_angle"]], axis=1)))
        by_driver[driver] = driven
        for name, value in lap_figures(driven, DRIVERS[driver], {HELD_OUT}).items():
            out.put(name, value)
    out.tables.append(lap_table(by_driver, list(bundled_tracks()), {HELD_OUT}))
    out.notes.append(f"endpoint: {laps} lap(s) a bundled track and direction through its "
                     f"lap requests; the held-out track is the bundled '{HELD_OUT}', which "
                     f"a model trained on its own tracks may not have been held out from")
