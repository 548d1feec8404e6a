"""The feedback store: records validated, written atomically and idempotently, joined."""

from __future__ import annotations

import json
import threading

import pytest

from training.feedback import (
    FeedbackConflict,
    FeedbackError,
    FeedbackRecord,
    GenerationRecord,
    LocalFeedbackStore,
    feedback_from_json,
    read_feedback,
)


def _generation(gid: str, text: str) -> GenerationRecord:
    return GenerationRecord(generation_id=gid, family="transformer", kind="generate",
                            inputs="Once", parameters={"seed": 1, "temperature": 0.8},
                            output={"text": text})


def test_round_trip_and_join(tmp_path):
    store = LocalFeedbackStore(tmp_path)
    assert store.put(_generation("g1", "first"))
    assert store.put(_generation("g2", "second"))
    assert store.put(FeedbackRecord(feedback_id="f1", chosen="g2", rejected="g1"))
    assert store.put(FeedbackRecord(feedback_id="f2", generation_id="g1", rating=2,
                                    comment="dull"))
    assert store.put(FeedbackRecord(feedback_id="f3", chosen="g2", rejected="missing"))
    got = read_feedback(tmp_path)
    assert [(c.output["text"], r.output["text"]) for c, r in got.preferences()] == [
        ("second", "first")]
    assert [(g.generation_id, rating) for g, rating in got.ratings()] == [("g1", 2)]
    assert store.get_generation("g2") == got.generations["g2"]
    assert store.get_generation("nope") is None


def test_same_id_twice_is_one_record_and_a_different_one_is_refused(tmp_path):
    store = LocalFeedbackStore(tmp_path)
    first = FeedbackRecord(feedback_id="f1", generation_id="g1", rating=5)
    assert store.put(first)
    retry = FeedbackRecord(feedback_id="f1", generation_id="g1", rating=5)  # later `created`
    assert not store.put(retry)
    with pytest.raises(FeedbackConflict, match="new id"):
        store.put(FeedbackRecord(feedback_id="f1", generation_id="g1", rating=1))
    assert len(read_feedback(tmp_path).feedback) == 1
    assert json.loads((tmp_path / "feedback" / "f1.json").read_text())["rating"] == 5


def test_racing_writers_of_one_id_leave_one_record(tmp_path):
    store = LocalFeedbackStore(tmp_path)
    results: list[object] = []

    def write(rating: int) -> None:
        try:
            results.append(store.put(FeedbackRecord(feedback_id="f", generation_id="g",
                                                    rating=rating)))
        except FeedbackConflict as exc:
            results.append(exc)

    threads = [threading.Thread(target=write, args=(1 + i % 5,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert len(list((tmp_path / "feedback").iterdir())) == 1


def test_a_killed_writer_leaves_nothing_readers_see(tmp_path):
    store = LocalFeedbackStore(tmp_path)
    store.put(_generation("g1", "x"))
    (tmp_path / "generations" / ".abc.tmp").write_bytes(b'{"generation_id": "g')
    assert list(read_feedback(tmp_path).generations) == ["g1"]


@pytest.mark.parametrize(("body", "message"), [
    ({"feedback_id": "f"}, "needs a rating"),
    ({"feedback_id": "f", "generation_id": "g", "rating": 7}, "from 1 to 5"),
    ({"feedback_id": "f", "generation_id": "g", "rating": True}, "whole number"),
    ({"feedback_id": "f", "chosen": "a", "rejected": "a"}, "two different"),
    ({"feedback_id": "f", "chosen": "a"}, "rejected must be"),
    ({"feedback_id": "../etc/passwd", "generation_id": "g", "rating": 1}, "feedback_id"),
    ({"feedback_id": "f", "generation_id": "g", "rating": 1, "stars": 3}, "unknown"),
    ([1, 2], "JSON object"),
])
def test_malformed_feedback_says_what_to_change(body, message):
    with pytest.raises(FeedbackError, match=message):
        feedback_from_json(body)


def test_a_corrupt_stored_record_is_named(tmp_path):
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / "bad.json").write_text("{not json")
    with pytest.raises(FeedbackError, match="bad.json"):
        read_feedback(tmp_path)
