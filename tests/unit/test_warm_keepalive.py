"""The edge warmer's kept-alive connections, against a local HTTP server that closes idle ones
the way nginx does after ``keepalive_timeout``: a warm after a quiet spell must not be lost."""

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from core.settings import Settings
from prefetch import warm
from prefetch.warm import EdgeWarmer

IDLE_CLOSE_S = 0.3  # the server's keep-alive: it closes a connection idle this long


class _Edge(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless a side closes
    timeout = IDLE_CLOSE_S  # an idle read times out and the handler closes the connection
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        body = b"x" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Cache-Status", "MISS")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def edge() -> Iterator[tuple[int, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Edge)
    server.daemon_threads = True
    _Edge.seen = []
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1], _Edge.seen
    finally:
        server.shutdown()
        server.server_close()


def _warmer(port: int) -> EdgeWarmer:
    return EdgeWarmer(Settings(edge_port=port, prefetch_concurrency=1, prefetch_timeout_s=5.0))


def test_a_warm_on_a_connection_the_edge_closed_is_sent_again_on_a_new_one(edge, monkeypatch):
    port, seen = edge
    monkeypatch.setattr(warm, "IDLE_REUSE_S", 60.0)  # reuse it: the edge closes it first
    with _warmer(port) as w:
        assert w.warm(["/media/1/thumb"]).warmed == 1
        assert len(w._idle) == 1  # kept alive for the next warm
        time.sleep(IDLE_CLOSE_S * 3)  # the edge closes it meanwhile
        again = w.warm(["/media/2/thumb"])
    assert (again.warmed, again.failed) == (1, 0)
    assert seen == ["/media/1/thumb", "/media/2/thumb"]


def test_a_connection_idle_past_the_reuse_bound_is_closed_not_reused(edge, monkeypatch):
    port, seen = edge
    monkeypatch.setattr(warm, "IDLE_REUSE_S", 0.05)
    with _warmer(port) as w:
        assert w.warm(["/media/1/thumb"]).warmed == 1
        (first, _) = w._idle[0]
        time.sleep(0.1)
        assert w.warm(["/media/2/thumb"]).warmed == 1
        (second, _) = w._idle[0]
    assert second is not first and first.sock is None  # closed, a new one took the request
    assert seen == ["/media/1/thumb", "/media/2/thumb"]
