"""A bounded load test over loopback: concurrent streaming and whole requests against the
real server process, every answer checked against the same seeded request made alone."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import serving, sse_events

CLIENTS = 8  # concurrent clients
REQUESTS = 32  # in all, half of them streamed
MAX_RSS_GROWTH_MB = 64.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def payload(i: int, stream: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"max_new_tokens": 6 + i % 11, "seed": 100 + i % 9,
                              "details": True}
    if i % 4:
        params.update(temperature=0.7 + 0.1 * (i % 5), top_k=20 + i % 7)
    return {"inputs": ["Beautiful is", "Flat", "Now is better", ""][i % 4],
            "parameters": params, "stream": stream}


def whole(client: httpx.Client, body: dict[str, Any]) -> tuple[int, str, str]:
    answer = client.post("/invocations", json={**body, "stream": False})
    if answer.status_code != 200:
        return answer.status_code, answer.text, ""
    [result] = answer.json()
    return 200, result["generated_text"], result["details"]["finish_reason"]


def streamed(client: httpx.Client, body: dict[str, Any]) -> tuple[int, str, str]:
    with client.stream("POST", "/invocations", json={**body, "stream": True}) as answer:
        if answer.status_code != 200:
            return answer.status_code, answer.read().decode(), ""
        events = sse_events(answer.iter_lines())
    # Complete and in order: indices 1..n, only the last one carries the text.
    assert [e["index"] for e in events] == list(range(1, len(events) + 1)), events
    assert all(e["generated_text"] is None for e in events[:-1])
    final = events[-1]
    assert final["details"]["generated_tokens"] == len(events)
    assert final["generated_text"] == "".join(e["token"]["text"] for e in events)
    return 200, final["generated_text"], final["details"]["finish_reason"]


@pytest.fixture(scope="module")
def server(tiny_artifact: Path) -> Any:
    env = {**os.environ, "GENKILN_MAX_BATCH_SIZE": "4", "GENKILN_NUM_THREADS": "1",
           "GENKILN_LOG_LEVEL": "WARNING"}
    with serving(tiny_artifact, env=env) as served:
        yield served.process, served.url


def test_concurrent_clients_get_what_they_get_alone(server: Any) -> None:
    process, url = server
    bodies = [payload(i, stream=i % 2 == 0) for i in range(REQUESTS)]
    with httpx.Client(base_url=url, timeout=60) as client:
        # Alone, one at a time: the reference answers (and the warm-up).
        alone = [whole(client, b) for b in bodies]
        assert all(status == 200 for status, _, _ in alone), alone
        rss_before = rss_mb(process.pid)

    def call(i: int) -> tuple[int, str, str]:
        with httpx.Client(base_url=url, timeout=60) as client:
            return (streamed if bodies[i]["stream"] else whole)(client, bodies[i])

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        together = list(pool.map(call, range(REQUESTS)))
    assert [status for status, _, _ in together] == [200] * REQUESTS, together
    assert together == alone
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:  # once more: memory settles
        assert list(pool.map(call, range(REQUESTS))) == alone
    assert rss_mb(process.pid) - rss_before < MAX_RSS_GROWTH_MB
