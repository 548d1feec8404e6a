"""Requests of the largest allowed size against the real server process: each is answered
(refused or served), the health check keeps passing while the server takes them apart,
and the memory they took is given back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import serving
from tests.e2e.test_fuzz import Pinger
from tests.e2e.test_load import rss_mb

#: Resident memory a served process may keep after the large requests, over its baseline.
MAX_KEPT_MB = 64.0
SIX_MB = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def served(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    env = {**os.environ, "GENKILN_FEEDBACK_DIR": str(tmp_path_factory.mktemp("large"))}
    with serving(tiny_artifact, env=env) as server:
        yield server


def bodies() -> list[tuple[str, bytes, int]]:
    words = ("Beautiful is better than ugly. " * 200_000)[: SIX_MB - 200]
    many = json.dumps({"inputs": ["ab"] * 600_000}).encode()
    deep = b"[" * (SIX_MB - 10)
    return [
        ("a 6 MB prompt", json.dumps({"inputs": words}).encode(), 422),
        ("a 6 MB prompt, truncated", json.dumps({"inputs": words, "parameters": {
            "truncate": 16, "max_new_tokens": 4}}).encode(), 200),
        ("600,000 prompts", many, 422),
        ("6 MB of nesting", deep, 400),
        ("a 6 MB chat", json.dumps({"messages": [{"role": "user", "content": words}],
                                    "max_tokens": 4}).encode(), 422),
    ]


def test_allowed_size_requests_are_answered_while_pings_pass(served: object) -> None:
    url = served.url  # type: ignore[attr-defined]
    pid = served.process.pid  # type: ignore[attr-defined]
    with httpx.Client(base_url=url, timeout=70) as client:
        client.post("/invocations", json={"inputs": "warm", "parameters": {"max_new_tokens": 2}})
        before = rss_mb(pid)
        pinger = Pinger(url)
        pinger.start()
        try:
            for what, body, status in bodies():
                assert len(body) <= SIX_MB, what
                for _ in range(2):
                    answer = client.post("/invocations", content=body,
                                         headers={"Content-Type": "application/json"})
                    assert answer.status_code == status, (what, answer.text[:300])
                    assert "error" in answer.json() if status >= 400 else answer.json()
        finally:
            pinger.stopped.set()
            pinger.join(5)
        after = rss_mb(pid)
    worst = max(pinger.latencies)
    print(f"\nlarge requests: {len(pinger.latencies)} pings, slowest {worst * 1000:.1f} ms; "
          f"RSS {before:.0f} MB before, {after:.0f} MB after")
    assert not pinger.failures, pinger.failures[:5]
    assert after - before < MAX_KEPT_MB


def test_a_body_over_six_megabytes_is_refused_before_it_is_read(served: object) -> None:
    url = served.url  # type: ignore[attr-defined]
    answer = httpx.post(f"{url}/invocations", content=b"x" * (SIX_MB + 1),
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and "6 MB" in answer.json()["error"]
