"""The DeepRacer developer guide's first example reward: follow the centre line.

Rewards the car more the closer it keeps to the centre line, in three bands. Runs
unchanged in the DeepRacer console and in `genkiln train --family racer --reward FILE`.
"""


def reward_function(params):
    track_width = params["track_width"]
    distance_from_center = params["distance_from_center"]

    # Three bands around the centre line, the widest at the border.
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
        reward = 1e-3  # about to leave the track

    return float(reward)
