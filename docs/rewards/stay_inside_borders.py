"""The DeepRacer developer guide's second example reward: stay inside the two borders.

A flat reward while every wheel is on the track with a margin to the border, almost
nothing otherwise: the car is free to take any line.
"""


def reward_function(params):
    all_wheels_on_track = params["all_wheels_on_track"]
    distance_from_center = params["distance_from_center"]
    track_width = params["track_width"]

    reward = 1e-3
    if all_wheels_on_track and (0.5 * track_width - distance_from_center) >= 0.05:
        reward = 1.0

    return float(reward)
