"""The DeepRacer developer guide's third example reward: prevent zig-zag.

Follow the centre line as in the first example, and take a fifth off the reward when the
steering is beyond 15 degrees either way.
"""


def reward_function(params):
    distance_from_center = params["distance_from_center"]
    track_width = params["track_width"]
    abs_steering = abs(params["steering_angle"])

    marker_1 = 0.1 * track_width
    marker_2 = 0.25 * track_width
    marker_3 = 0.5 * track_width

    if distance_from_center <= marker_1:
        reward = 1.0
    elif distance_from_center <= marker_2:
        reward = 0.5
    elif distance_from_center <= marker_3:
        reward = 0.1
    else:
        reward = 1e-3

    steering_threshold = 15
    if abs_steering > steering_threshold:
        reward *= 0.8

    return float(reward)
