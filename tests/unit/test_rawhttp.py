"""The load generator's lean HTTP/1.1 client, against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bench.rawhttp import ProtocolError, RawClient, _parse_head


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[tuple[str, int]]] = set()

    def _send(self, status: int, body: bytes, *, chunked: bool = False, close: bool = False):
        Handler.connections.add(self.client_address)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:3], body[3:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            threading.Event().wait(2)
        echo = {"path": self.path, "key": self.headers.get("X-API-Key")}
        body = json.dumps(echo).encode()
        self._send(
            503 if self.path.startswith("/shed") else 200,
            body,
            chunked=self.path.startswith("/chunked"),
            close=self.path.startswith("/close"),
        )

    def do_POST(self) -> None:
        got = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(202, got)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _run(coro):
    return asyncio.run(coro)


def test_reads_statuses_bodies_and_sends_the_headers_and_query(url):
    async def go():
        async with RawClient(url, {"X-API-Key": "k1"}, timeout_s=5) as c:
            ok = await c.get("/v1/feed/3", params={"limit": 10})
            shed = await c.get("/shed")
            chunked = await c.get("/chunked/x")
            posted = await c.post("/v1/events", json={"events": [1, 2]})
            return ok, shed, chunked, posted

    ok, shed, chunked, posted = _run(go())
    assert ok.status == 200 and ok.json() == {"path": "/v1/feed/3?limit=10", "key": "k1"}
    assert shed.status == 503 and shed.json()["path"] == "/shed"
    assert chunked.status == 200 and chunked.json()["path"] == "/chunked/x"
    assert posted.status == 202 and posted.json() == {"events": [1, 2]}


def test_keeps_the_connection_and_opens_a_new_one_when_the_server_closed_it(url):
    async def go():
        Handler.connections.clear()
        async with RawClient(url, {}, timeout_s=5) as c:
            for _ in range(5):
                assert (await c.get("/a")).status == 200
            one = len(Handler.connections)
            assert (await c.get("/close")).status == 200  # the server ends this connection
            assert (await c.get("/b")).status == 200
            return one, len(Handler.connections)

    one, after = _run(go())
    assert one == 1 and after == 2


def test_a_request_that_outlasts_the_timeout_raises_timeout_error(url):
    async def go():
        async with RawClient(url, {}, timeout_s=0.2) as c:
            await c.get("/slow")

    with pytest.raises(TimeoutError):
        _run(go())


def test_refuses_what_it_does_not_speak():
    with pytest.raises(ValueError, match="plain http"):
        RawClient("https://example.com", {}, timeout_s=1)
    with pytest.raises(ProtocolError, match="status line"):
        _parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_monitoring_processes_are_a_cpu_group_of_their_own():
    from bench.load import GROUPS, group_of

    assert "monitoring" in GROUPS
    cases = {
        ("prometheus", b"/usr/bin/prometheus\0--config.file=x"): "monitoring",
        ("prometheus-aler", b"/usr/bin/prometheus-alertmanager\0"): "monitoring",
        ("prometheus-redi", b"/usr/bin/prometheus-redis-exporter\0--redis.addr=x"): "monitoring",
        ("mtail", b"/usr/bin/mtail\0--progs=x"): "monitoring",
        ("python", b"/v/bin/python\0-m\0pipelines.responder\0tok"): "monitoring",
        ("redis-server", b"/usr/bin/redis-server 127.0.0.1:6379"): "redis",
    }
    for (comm, cmd), group in cases.items():
        assert group_of(1, comm, cmd) == group, comm
