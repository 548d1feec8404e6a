"""A lean HTTP/1.1 load client: one keep-alive connection per simulated client.

httpx spends a few milliseconds of CPU per request; on a 2-core machine that is CPU taken
from the server being measured, and it caps every server at the same rate. This client
does only what a load generator must (write a request, read the status, the headers and
a Content-Length or chunked body), so the figures measure the servers, as wrk or hey
would. Used for every server alike.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit


class Connection:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = parts.path or "/"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def _send(self, payload: Any) -> tuple[int, dict[str, str]]:
        assert self.reader is not None and self.writer is not None, "use `async with`"
        body = json.dumps(payload).encode()
        self.writer.write(f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                          f"\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _chunks(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        assert self.reader is not None
        if headers.get("transfer-encoding", "").lower() != "chunked":
            yield await self.reader.readexactly(int(headers.get("content-length", "0")))
            return
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self.reader.readexactly(size + 2)  # the data, then CRLF
            if size == 0:
                return
            yield chunk[:-2]

    async def post(self, payload: Any) -> tuple[int, bytes]:
        """Status and whole body of one request."""
        status, headers = await self._send(payload)
        return status, b"".join([c async for c in self._chunks(headers)])

    async def post_lines(self, payload: Any) -> AsyncIterator[tuple[int, bytes]]:
        """Status and each non-empty line of a streamed body, as the lines arrive."""
        status, headers = await self._send(payload)
        pending = b""
        async for chunk in self._chunks(headers):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield status, line
        if pending.strip():
            yield status, pending
