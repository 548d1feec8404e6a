"""SIGTERM while streams run, against the real server process: SageMaker sends SIGTERM
and kills the container 30 s later. Every stream must end with an event that says how
it ended (its final event, or an error event saying the server is shutting down), and
the process must exit inside the grace period it was given."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TINY
from tests.e2e.servers import serving
from training.entry import run_training
from training.local import emulate_opt_ml

GRACE = 6.0  # seconds from SIGTERM to exit; streams are cut at GRACE - 5
STREAMS = 4


@pytest.fixture(scope="module")
def long_context_model(tmp_path_factory: pytest.TempPathFactory, text_dir: Path) -> Path:
    """A model wide and long enough that a full-context stream outlasts the drain."""
    hyperparameters = {**TINY, "n_layer": "8", "n_head": "8", "n_embd": "512",
                       "block_size": "512", "max_steps": "1", "batch_size": "1",
                       "eval_interval": "1", "eval_batches": "1"}
    opt_ml = emulate_opt_ml(tmp_path_factory.mktemp("opt_ml_long"),
                            hyperparameters=hyperparameters, data=text_dir,
                            validation=text_dir)
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    return opt_ml.model_dir


def test_sigterm_ends_every_stream_with_an_event_and_exits_in_time(
        long_context_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "GENKILN_SHUTDOWN_GRACE_SECONDS": str(GRACE),
           "GENKILN_FEEDBACK_DIR": str(tmp_path / "records"), "GENKILN_NUM_THREADS": "1"}
    ended: list[list[Any]] = []
    started = threading.Barrier(STREAMS + 1)

    def stream(url: str, i: int) -> None:
        payload = {"inputs": f"Flat {i}", "stream": True,
                   "parameters": {"max_new_tokens": 500, "do_sample": True, "seed": i}}
        events: list[Any] = []
        with httpx.stream("POST", f"{url}/invocations", json=payload, timeout=60) as answer:
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[len("data:"):]))
                    if len(events) == 1:
                        started.wait(30)
        ended.append(events)

    with serving(long_context_model, env=env) as served:
        readers = [threading.Thread(target=stream, args=(served.url, i)) for i in range(STREAMS)]
        for reader in readers:
            reader.start()
        started.wait(60)  # every stream has its first token
        sent = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        for reader in readers:
            reader.join(30)
        code = served.process.wait(30)
        took = time.monotonic() - sent
        log = served.output()
    # uvicorn re-raises the signal it caught once it has shut down: the status says SIGTERM.
    assert code in (0, -signal.SIGTERM), log
    assert took < GRACE + 2, f"exited {took:.1f} s after SIGTERM (grace {GRACE:g} s)"
    assert len(ended) == STREAMS
    for events in ended:
        last = events[-1]
        if "error" in last:  # cut by the drain, and told so
            assert last["error_type"] == "overloaded" and "shutting down" in last["error"]
        else:
            assert last["details"]["finish_reason"] in {"length", "eos_token"}
            assert last["generated_text"] == "".join(e["token"]["text"] for e in events)
    how = ["cut" if "error" in events[-1] else "final" for events in ended]
    print(f"\nSIGTERM: exit after {took:.1f} s; streams ended: {how}")
    assert "draining" in log
