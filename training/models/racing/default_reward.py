"""genkiln's default reward for the racer: progress along the track, kept near the centre.

Written as for the DeepRacer console (it runs there unchanged). Each step earns the
distance the car makes along the track's direction (speed times the cosine of its heading
against the track), scaled down as it drifts from the centre line; going off track earns
almost nothing and ends the episode. With a discount below 1 the sooner the same
distance is covered the more it is worth, so the policy learns to be quick as well as
safe (a reward that pays per step alone pays a slow car more).
"""

import math


def reward_function(params):
    if params["is_offtrack"] or not params["all_wheels_on_track"]:
        return 1e-3
    waypoints = params["waypoints"]
    behind, ahead = params["closest_waypoints"]
    track_heading = math.atan2(waypoints[ahead][1] - waypoints[behind][1],
                               waypoints[ahead][0] - waypoints[behind][0])
    error = math.radians(params["heading"]) - track_heading
    along = math.cos(math.atan2(math.sin(error), math.cos(error)))
    centre = 1.0 - (params["distance_from_center"] / (0.5 * params["track_width"])) ** 2
    return float(max(1e-3, params["speed"] * max(0.0, along) * (0.5 + 0.5 * max(0.0, centre))))
