"""A server killed with SIGKILL while it writes feedback loses no acknowledged record and
leaves no partial one: every record file in the store parses, and the store reads."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from genkiln.client import EndpointClient
from tests.e2e.servers import GENKILN, free_port
from training.feedback import GENERATIONS, read_feedback

WRITERS = 4
KILL_AFTER = 40  # acknowledged judgements before the kill; more are in flight then


def test_sigkill_while_writing_loses_and_corrupts_nothing(tiny_artifact: Path,
                                                          tmp_path: Path) -> None:
    store = tmp_path / "store"
    port = free_port()
    server = subprocess.Popen(
        [*GENKILN, "serve", str(tiny_artifact), "--port", str(port)],
        env={**os.environ, "GENKILN_FEEDBACK_DIR": str(store), "GENKILN_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = EndpointClient(url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while not client.ping():
            assert server.poll() is None and time.monotonic() < deadline, "server not ready"
            time.sleep(0.05)
        [first] = client.generate("Now is", max_new_tokens=4, temperature=0.9)
        [second] = client.generate("Now is", max_new_tokens=4, temperature=0.9)
        a, b = first["generation_id"], second["generation_id"]

        acknowledged: list[str] = []
        lock = threading.Lock()
        enough = threading.Event()

        def write(worker: int) -> None:
            with httpx.Client(timeout=10) as http:
                for n in range(10_000):
                    feedback_id = f"fb-{worker}-{n}"
                    judgement = ({"generation_id": a, "rating": 1 + n % 5} if n % 2 else
                                 {"chosen": b, "rejected": a, "comment": "x" * (n % 300)})
                    try:
                        answer = http.post(
                            f"http://127.0.0.1:{port}/invocations",
                            json={"feedback": {"feedback_id": feedback_id, **judgement}})
                        # Generations are recorded too, between the judgements.
                        if n % 7 == 0:
                            http.post(f"http://127.0.0.1:{port}/invocations",
                                      json={"inputs": "Now", "parameters": {
                                          "max_new_tokens": 2, "temperature": 1.0}})
                    except httpx.HTTPError:
                        return  # the server is gone
                    assert answer.status_code == 200, answer.text
                    with lock:
                        acknowledged.append(feedback_id)
                        if len(acknowledged) >= KILL_AFTER:
                            enough.set()

        writers = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for thread in writers:
            thread.start()
        assert enough.wait(120), "the server acknowledged too few judgements"
        server.send_signal(signal.SIGKILL)
        server.wait()
        for thread in writers:
            thread.join(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    # Every record file is whole JSON; only hidden temporary files may be left over.
    for path in store.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert path.suffix == ".json", path
            json.loads(path.read_bytes())
    stored = read_feedback(store)
    ids = {f.feedback_id for f in stored.feedback}
    assert set(acknowledged) <= ids  # nothing that was acknowledged is lost
    assert len(ids) >= KILL_AFTER
    assert {a, b} <= set(stored.generations)
    assert len(list((store / GENERATIONS).glob("*.json"))) == len(stored.generations)
