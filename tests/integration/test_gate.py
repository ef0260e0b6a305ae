"""The API gate (the edge's nginx in front of Ray Serve): it forwards the feed as it is, and
sheds what is over its in-flight limit with 503 + Retry-After before the upstream sees it.

The shedding tests put the gate in front of an upstream of their own that holds every request
until the test lets go, so "in flight" is a state the test controls, not a race with the clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from core import constants as C
from core.settings import DEV_API_KEY, Settings
from stack import nginx
from tests.integration.suite import free_ports
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

LIMIT = 2


class Held:
    """An upstream that counts what reaches it and answers only once ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.arrived = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/health":
                    return self._answer(200, b'{"ok": true}')
                with outer.lock:
                    outer.arrived += 1
                if self.path == "/busy":  # the upstream's own 503 must pass through unchanged
                    return self._answer(503, b'{"detail": "upstream busy"}')
                outer.release.wait(30)
                self._answer(200, b'{"items": []}')

            def do_POST(self) -> None:
                with outer.lock:
                    outer.arrived += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(202, b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture(scope="module")
def held() -> Iterator[Held]:
    h = Held()
    thread = threading.Thread(target=h.server.serve_forever, daemon=True)
    thread.start()
    yield h
    h.release.set()
    h.server.shutdown()


@pytest.fixture(scope="module")
def gate(held: Held, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    edge_port, gate_port, origin_port = free_ports(3)
    s = Settings(
        home=Path(tmp_path_factory.mktemp("gate")),
        edge_port=edge_port,
        gate_port=gate_port,
        origin_port=origin_port,
        serve_port=held.port,
        gate_max_inflight=LIMIT,
        max_body_bytes=1024,
    )
    assert nginx.up(s).startswith("started")
    try:
        yield s.gate_url
    finally:
        nginx.down(s)


def test_over_the_limit_is_shed_with_503_and_retry_after_and_never_reaches_the_upstream(
    held: Held, gate: str
):
    held.release.clear()
    before = held.arrived
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.get, f"{gate}/v1/feed/{u}", timeout=30) for u in range(6)]
        # The shed ones come back while the admitted ones are still held upstream (waiting
        # for both: nginx may pass the admitted ones on after it answered the shed ones).
        wait_until(
            lambda: sum(f.done() for f in futures) >= 6 - LIMIT and held.arrived - before >= LIMIT,
            timeout=30,
            interval=0.01,
            what=f"{6 - LIMIT} answers shed and {LIMIT} requests held upstream",
        )
        shed = [f.result() for f in futures if f.done()]
        held_back = [f for f in futures if not f.done()]
        assert len(shed) == 6 - LIMIT and len(held_back) == LIMIT
        assert held.arrived - before == LIMIT
        held.release.set()
        admitted = [f.result(timeout=30) for f in held_back]
    assert [r.status_code for r in shed] == [503] * 4
    assert all(r.headers["Retry-After"] == "1" for r in shed)
    assert all(r.headers["X-Gate"] == "shed" for r in shed)
    assert "overloaded" in shed[0].json()["detail"] and str(LIMIT) in shed[0].json()["detail"]
    assert [r.status_code for r in admitted] == [200] * LIMIT
    assert held.arrived - before == LIMIT
    # The slots are free again: the next request goes through.
    assert httpx.get(f"{gate}/v1/feed/7", timeout=30).status_code == 200


def test_the_upstreams_own_503_passes_through_unchanged(held: Held, gate: str):
    held.release.set()
    r = httpx.get(f"{gate}/busy", timeout=10)
    assert r.status_code == 503 and r.json() == {"detail": "upstream busy"}
    assert "Retry-After" not in r.headers


def test_a_body_over_the_limit_is_413_at_the_gate_and_never_uploaded(held: Held, gate: str):
    before = held.arrived
    r = httpx.post(f"{gate}/v1/events", content=b"x" * 4096, timeout=10)
    assert r.status_code == 413
    assert r.json()["max_body_bytes"] == 1024 and "too large" in r.json()["detail"]
    assert held.arrived == before
    assert httpx.post(f"{gate}/v1/events", content=b"{}", timeout=10).status_code == 202


def test_the_suites_gate_serves_the_feed_as_ray_serve_does(settings: Settings, service: str, world):
    user = int(world.users[C.USER_ID].iloc[0])
    headers = {"X-API-Key": DEV_API_KEY}
    direct = httpx.get(f"{service}/v1/feed/{user}", headers=headers, timeout=30)
    via = httpx.get(f"{settings.gate_url}/v1/feed/{user}", headers=headers, timeout=30)
    assert via.status_code == direct.status_code == 200, via.text
    assert via.headers["X-Gate"] == "feedcast"
    assert via.json().keys() == direct.json().keys() and via.json()["items"]
    # Ray Serve's own answers pass through: no key is a 401, an unknown user a 404.
    assert httpx.get(f"{settings.gate_url}/v1/feed/{user}", timeout=30).status_code == 401
    gone = httpx.get(f"{settings.gate_url}/v1/feed/987654321", headers=headers, timeout=30)
    assert gone.status_code == 404 and "X-Gate" in gone.headers
    # A 16 KB wrong key (hostile_input sends one) reaches the service and is its 401, not
    # nginx's HTML 400 for headers over its default 8 KB buffers.
    long_key = {"X-API-Key": DEV_API_KEY + "x" * 16_000}
    r = httpx.get(f"{settings.gate_url}/v1/feed/{user}", headers=long_key, timeout=30)
    assert r.status_code == 401 and "detail" in r.json(), r.text
