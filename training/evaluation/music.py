"""The MuseGAN paper's objective measures of multi-track piano rolls (Dong et al. 2018, §5).

Computed on (N, tracks, steps, PITCHES) 0/1 rolls whose steps are whole 4/4 bars, track 0
being the melody. The first three describe the accompanying tracks (the melody is given,
not generated); tonal distance describes how the tracks fit together.

- empty_bar_rate: share of (track, bar) pairs without a note.
- pitch_classes: pitch classes used per bar (0-12), over the bars that have notes.
- qualified_note_rate: share of notes at least `QUALIFIED_STEPS` steps long. MuseGAN counts
  notes of at least three of its 96 steps a bar (a 32nd note); at 16 steps a bar no note
  is shorter than that, so a qualified note here is an eighth or longer (fragments of a
  single sixteenth are what an untrained generator writes).
- tonal_distance: distance between two tracks' tonal centroids (Harte et al. 2006: each
  bar's chroma mapped onto the circles of fifths, minor and major thirds), averaged over
  every pair of the four tracks and the bars where both sound; lower is more in harmony.
"""

from __future__ import annotations

import itertools

import numpy as np

from training.models.formats.pianoroll import PITCHES, STEPS_PER_BAR

QUALIFIED_STEPS = 2
METRICS = ("empty_bar_rate", "pitch_classes", "qualified_note_rate", "tonal_distance")
#: What each metric is divided by to put its differences on a 0-1 scale, for the gap.
_SCALE = {"empty_bar_rate": 1.0, "pitch_classes": 12.0, "qualified_note_rate": 1.0,
          "tonal_distance": 1.0}


def _tonal_matrix() -> np.ndarray:
    """(6, 12): pitch class -> point on the circles of fifths, minor and major thirds."""
    pc = np.arange(12)
    radii, angles = (1.0, 1.0, 0.5), (7 * np.pi / 6, 3 * np.pi / 2, 2 * np.pi / 3)
    rows = []
    for r, a in zip(radii, angles, strict=True):
        rows += [r * np.sin(pc * a), r * np.cos(pc * a)]
    return np.stack(rows)


TONAL = _tonal_matrix()


def bar_chroma(rolls: np.ndarray) -> np.ndarray:
    """(N, T, steps, P) -> (N, T, bars, 12): active steps per pitch class per bar."""
    n, tracks, steps, pitches = rolls.shape
    assert steps % STEPS_PER_BAR == 0 and pitches == PITCHES
    bars = rolls.reshape(n, tracks, steps // STEPS_PER_BAR, STEPS_PER_BAR, pitches // 12, 12)
    return bars.sum(axis=(3, 4), dtype=np.float64)


def music_metrics(rolls: np.ndarray) -> dict[str, float]:
    rolls = np.asarray(rolls, dtype=bool)
    chroma = bar_chroma(rolls)  # (N, T, bars, 12)
    sounding = chroma.sum(-1) > 0  # (N, T, bars)
    accompaniment = sounding[:, 1:]
    used = (chroma[:, 1:] > 0).sum(-1)  # (N, 3, bars)

    x = rolls[:, 1:]  # (N, 3, steps, P)
    before = np.zeros_like(x)
    before[:, :, 1:] = x[:, :, :-1]
    onsets = x & ~before
    qualified = onsets.copy()
    for k in range(1, QUALIFIED_STEPS):  # still sounding k steps after the onset
        later = np.zeros_like(x)
        later[:, :, :-k] = x[:, :, k:]
        qualified &= later
    notes = int(onsets.sum())

    centroids = np.einsum("dc,ntbc->ntbd", TONAL,
                          chroma / np.maximum(chroma.sum(-1, keepdims=True), 1e-9))
    distances = []
    for a, b in itertools.combinations(range(rolls.shape[1]), 2):
        both = sounding[:, a] & sounding[:, b]
        distances.append(np.linalg.norm(centroids[:, a] - centroids[:, b], axis=-1)[both])
    pooled = np.concatenate(distances) if distances else np.zeros(0)
    return {
        "empty_bar_rate": float(1.0 - accompaniment.mean()),
        "pitch_classes": float(used[accompaniment].mean()) if accompaniment.any() else 0.0,
        "qualified_note_rate": float(qualified.sum() / notes) if notes else 0.0,
        "tonal_distance": float(pooled.mean()) if pooled.size else 0.0,
    }


def metric_gap(generated: dict[str, float], real: dict[str, float]) -> float:
    """Mean absolute difference from the real music's metrics, each on a 0-1 scale
    (pitch classes divided by 12): 0 means indistinguishable by these measures."""
    return float(np.mean([abs(generated[m] - real[m]) / _SCALE[m] for m in METRICS]))
