"""Dynamic micro-batching: the batcher, and image handlers answering batches as singles."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.errors import ClientError
from inference.handlers import load_handler
from inference.microbatch import MicroBatcher
from training.artifact import load_artifact

WAIT = 20.0


def test_requests_arriving_together_run_as_one_batch() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def run(batch: list[int]) -> list[int]:
        if batch == [0]:
            release.wait(WAIT)  # hold the first batch so the rest queue up behind it
        seen.append(batch)
        return [x * 10 for x in batch]

    batcher = MicroBatcher(run, max_batch=4, wait_s=0.0)
    try:
        futures = [batcher.submit(0)]
        while not batcher.batches:  # the first batch is running
            threading.Event().wait(0.001)
        futures += [batcher.submit(i) for i in range(1, 7)]
        release.set()
        assert [f.result(WAIT) for f in futures] == [0, 10, 20, 30, 40, 50, 60]
        assert seen == [[0], [1, 2, 3, 4], [5, 6]]  # never above max_batch
    finally:
        batcher.close()


def test_a_lone_request_never_waits() -> None:
    batcher = MicroBatcher(lambda b: [len(b)] * len(b), max_batch=8, wait_s=600.0)
    try:
        assert batcher.submit(0).result(WAIT) == 1  # not held for the 600 s of company
    finally:
        batcher.close()


def test_once_requests_come_together_the_first_waits_for_company() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def run(batch: list[int]) -> list[int]:
        if batch == [0]:
            release.wait(WAIT)
        seen.append(batch)
        return batch

    batcher = MicroBatcher(run, max_batch=2, wait_s=600.0)
    try:
        first = batcher.submit(0)
        while not batcher.batches:
            threading.Event().wait(0.001)
        together = [batcher.submit(1), batcher.submit(2)]  # queued behind [0]: one batch
        release.set()
        assert first.result(WAIT) == 0 and [f.result(WAIT) for f in together] == [1, 2]
        # Now a request alone in the queue waits for a second one (up to 600 s) ...
        late = batcher.submit(3)
        while len(batcher.batches) < 2 or batcher._queue.qsize():
            threading.Event().wait(0.001)
        assert not late.done()
        late_company = batcher.submit(4)  # ... which fills the batch and runs it at once
        assert late.result(WAIT) == 3 and late_company.result(WAIT) == 4
        assert seen == [[0], [1, 2], [3, 4]]
    finally:
        batcher.close()


def test_a_bad_request_fails_alone() -> None:
    def run(batch: list[Any]) -> list[Any]:
        if "bad" in batch:
            raise ClientError("bad input: send a good one")
        return [x.upper() for x in batch]

    batcher = MicroBatcher(run, max_batch=8, wait_s=0.2)
    try:
        futures: list[Future[Any]] = [batcher.submit(x) for x in ("a", "bad", "c")]
        assert futures[0].result(WAIT) == "A" and futures[2].result(WAIT) == "C"
        with pytest.raises(ClientError, match="send a good one"):
            futures[1].result(WAIT)
    finally:
        batcher.close()


def pixels(image: Any) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(image))))


@pytest.mark.parametrize(("family", "requests"), [
    ("gan", [{"kind": "sample", "n": 2, "seed": 1}, {"kind": "sample", "n": 3, "seed": 2,
                                                      "class": 1},
             {"kind": "sample", "n": 1}]),
    ("vae", [{"kind": "sample", "n": 2, "seed": 1}, {"kind": "sample", "n": 1, "seed": 5,
                                                      "class": 0}]),
    ("autoencoder", "digits"),
    ("rbm", "digits"),
])
def test_a_batch_answers_what_each_request_gets_alone(family: str, requests: Any,
                                                      image_artifacts: Any,
                                                      digits_dir: Path) -> None:
    handler: Any = load_handler(load_artifact(image_artifacts(family)))
    if requests == "digits":
        files = sorted(digits_dir.rglob("*.png"))[:5]
        images = [base64.b64encode(f.read_bytes()).decode() for f in files]
        kinds = list(handler.kinds)
        requests = [{"kind": kinds[i % len(kinds)], "image": im}
                    for i, im in enumerate(images) if kinds[i % len(kinds)] != "sample"]
        requests += [{"kind": kinds[-1], "image": images[0]}] * 2
    decoded = [handler.decode(r) for r in requests]
    together = handler.predict_batch(decoded)
    alone = [handler.predict(d) for d in decoded]
    assert len(together) == len(alone) == len(requests)
    for a, b in zip(together, alone, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key == "images":
                for x, y in zip(a[key], b[key], strict=True):
                    assert np.abs(pixels(x).astype(int) - pixels(y).astype(int)).max() <= 1
            elif isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7)
            elif isinstance(a[key], list) and a[key] and isinstance(a[key][0], float):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5)
            else:
                assert a[key] == b[key]

