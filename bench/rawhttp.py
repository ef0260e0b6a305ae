"""A lean HTTP/1.1 client for load generation: pre-encoded requests on kept-alive connections.

The chaos suite's open-loop generator shares 2 cores with the service it loads. With httpx it
spent ~1-2 ms of CPU a request and, at 4x capacity, measured its own event loop: a 503 that curl
saw in 0.7 ms (p50; max 6 ms) took 2.2 s by httpx's clock. This client does the least a load
generator must: write the request bytes, read the status line and headers, read the body by
Content-Length (or chunked), and keep the connection for the next request. Not a general client:
no redirects, TLS, proxies or cookies.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 this client can read."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RawClient:
    """``await client.get(path, params=...)`` / ``client.post(path, json=...)``; every request
    ends within ``timeout_s`` (connect, write and read together) or raises ``TimeoutError``."""

    def __init__(
        self, base_url: str, headers: dict[str, str], timeout_s: float, max_idle: int = 64
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"RawClient speaks plain http to a host: {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.timeout_s, self.max_idle = timeout_s, max_idle
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {self.host}:{self.port}\r\n{extra}".encode()
        self._idle: list[Conn] = []

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Response:
        target = f"{path}?{urlencode(params)}" if params else path
        return await self.request("GET", target)

    async def post(self, path: str, json: Any) -> Response:
        body = _dumps(json)
        return await self.request("POST", path, body, "application/json")

    async def request(
        self, method: str, target: str, body: bytes = b"", content_type: str = ""
    ) -> Response:
        async with asyncio.timeout(self.timeout_s):
            if self._idle:
                conn = self._idle.pop()
                try:
                    resp, keep = await self._exchange(conn, method, target, body, content_type)
                except (ConnectionError, asyncio.IncompleteReadError):
                    # The server had closed this kept-alive connection: once more on a new one.
                    conn[1].close()
                    conn, resp, keep = await self._fresh(method, target, body, content_type)
                except BaseException:
                    conn[1].close()
                    raise
            else:
                conn, resp, keep = await self._fresh(method, target, body, content_type)
        if keep and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn[1].close()
        return resp

    async def _fresh(
        self, method: str, target: str, body: bytes, content_type: str
    ) -> tuple[Conn, Response, bool]:
        conn = await asyncio.open_connection(self.host, self.port)
        try:
            resp, keep = await self._exchange(conn, method, target, body, content_type)
        except BaseException:
            conn[1].close()
            raise
        return conn, resp, keep

    async def _exchange(
        self, conn: Conn, method: str, target: str, body: bytes, content_type: str
    ) -> tuple[Response, bool]:
        reader, writer = conn
        head = f"{method} {target} HTTP/1.1\r\n".encode() + self._head
        if body or method == "POST":
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode()
        writer.write(head + b"\r\n" + body)
        raw = await reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(raw)
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            data = await _read_chunked(reader)
        elif status in (204, 304) or method == "HEAD":
            data = b""
        else:  # delimited by the connection's end
            return Response(status, headers, await reader.read()), False
        keep = headers.get("connection", "").lower() != "close"
        return Response(status, headers, data), keep


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the end
                pass
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
