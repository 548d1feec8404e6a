"""Held-out splits: seeded, whole items, and by tune where the data repeats itself."""

from __future__ import annotations

import pytest

from training.data.errors import DataError
from training.data.music import OPENING_NOTES, melody_tune, tune_of
from training.data.tokens import split
from training.models.formats.notes import Note


def test_a_plain_split_is_seeded_disjoint_and_covers_every_item():
    items = list(range(40))
    train, held = split(items, 0.25, seed=3, what="items")
    assert len(held) == 10
    assert sorted(train + held) == items
    assert split(items, 0.25, seed=3, what="items") == (train, held)
    assert split(items, 0.25, seed=4, what="items")[1] != held


def test_grouped_items_fall_on_one_side_and_about_the_fraction_is_held_out():
    # Ten tunes, each in one to four copies.
    items = [(tune, copy) for tune in range(10) for copy in range(1 + tune % 4)]
    for seed in range(20):
        train, held = split(items, 0.3, seed=seed, what="tunes", group=lambda i: i[0])
        assert sorted(train + held) == sorted(items)
        assert {t for t, _ in train}.isdisjoint({t for t, _ in held})
        assert len(held) >= round(0.3 * len(items))
        # Held out group by group: without the last group it took, too few were.
        last = held[-1][0]
        assert len([i for i in held if i[0] != last]) < round(0.3 * len(items))


def test_one_group_cannot_be_split_and_the_error_says_what_to_do():
    with pytest.raises(DataError, match="repeat one another.*validation channel"):
        split([1, 1, 1], 0.5, seed=0, what="melodies", group=lambda i: i)


def test_a_tune_is_its_opening_intervals_in_any_key():
    melody = [Note(60, 1.0), Note(None, 0.5), Note(62, 1.0), Note(64, 0.5), Note(60, 2.0)]
    up_a_fourth = [Note(p + 5 if p is not None else None, d) for p, d in
                   ((n.pitch, n.duration) for n in melody)]
    assert melody_tune(melody) == melody_tune(up_a_fourth) == (2, 2, -4)
    # Only the opening counts: two melodies that part after it are one tune.
    long = list(range(60, 60 + 2 * OPENING_NOTES))
    assert tune_of(long) == tune_of([*long[:OPENING_NOTES], 30, 90])
    assert len(tune_of(long)) == OPENING_NOTES - 1
