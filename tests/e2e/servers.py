"""`genkiln serve` as a real process on a free port, for the tests that need one."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

import httpx

GENKILN = [sys.executable, "-m", "genkiln"]
READY_WITHIN = 60.0  # seconds from start to the first /ping 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, log: IO[bytes], *, env: Mapping[str, str] | None = None
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """Serve ``model``, its output to ``log`` (a file, not a pipe: a chatty server never
    blocks); return the process and its URL once /ping answers 200."""
    port = free_port()
    process = subprocess.Popen([*GENKILN, "serve", str(model), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT,
                               env=dict(env) if env is not None else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_WITHIN
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"server exited {process.returncode}: "
                                 f"{log.read().decode(errors='replace')}")
        assert time.monotonic() < deadline, f"server not ready within {READY_WITHIN:.0f} s"
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def sse_events(lines: Iterable[str]) -> list[Any]:
    """The JSON events of a server-sent-event stream's lines (`data:{...}`, blank between)."""
    events = []
    for line in lines:
        if line.strip():
            assert line.startswith("data:"), line
            events.append(json.loads(line[len("data:"):]))
    return events


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Served(NamedTuple):
    process: subprocess.Popen[bytes]
    url: str
    log: IO[bytes]

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@contextmanager
def serving(model: Path, *, env: Mapping[str, str] | None = None) -> Iterator[Served]:
    with tempfile.TemporaryFile() as log:
        process, url = start_server(model, log, env=env)
        try:
            yield Served(process, url, log)
        finally:
            stop_server(process)
