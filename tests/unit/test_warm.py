"""The edge's config, the origin's answers and the warmers' bookkeeping, with no services."""

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.cache import continuation_key, page_key, popular_key, prefetch_switch_key
from core.settings import Settings
from media import objects as media
from media.objects import content_type, served_bytes
from media.origin import create_app, pattern
from prefetch.warm import EdgeResult
from stack import nginx, origin
from stack.proc import StackError

# Directives whose first argument is a file or folder nginx writes.
WRITTEN = (
    "pid",
    "error_log",
    "access_log",
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
    "proxy_cache_path",
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        edge_port=18088,
        gate_port=18087,
        origin_port=18089,
        edge_cache_mb=64,
    )


@pytest.fixture
def nginx_binary() -> str:
    return nginx.ensure_installed()  # as the stack does: apt when missing, else a clear error


def test_every_path_the_edge_writes_is_under_its_stack_folder(settings):
    conf = nginx.render(settings)
    home = nginx.home(settings)
    assert home.parent == settings.stack_dir
    pattern = rf"^\s*({'|'.join(WRITTEN)})\s+([^;\s]+)"
    written = [(d, p) for d, p in re.findall(pattern, conf, flags=re.M) if p != "off"]
    assert {d for d, _ in written} == set(WRITTEN)
    assert all(Path(p).is_relative_to(home) for _, p in written), written


def test_the_edge_listens_on_loopback_and_caches_within_its_size(settings):
    conf = nginx.render(settings)
    assert re.findall(r"^\s*listen\s+(\S+);", conf, flags=re.M) == [
        "127.0.0.1:18087",
        "127.0.0.1:18088",
    ]  # gate, edge
    assert "server 127.0.0.1:18089;" in conf
    assert "max_size=64m" in conf
    assert "daemon off;" in conf
    assert "@{" not in conf


def test_modules_an_nginx_lacks_get_no_temp_path_directive(settings):
    conf = nginx.render(settings, frozenset({"uwsgi", "scgi"}))
    assert "fastcgi_temp_path" in conf
    assert "uwsgi_temp_path" not in conf
    assert "scgi_temp_path" not in conf


def test_nginx_accepts_the_rendered_config(settings, nginx_binary):
    assert nginx.configure(settings, nginx_binary) == nginx.home(settings) / "nginx.conf"


def test_a_config_nginx_refuses_raises_with_nginx_s_message(settings, nginx_binary):
    bad = settings.model_copy(update={"origin_port": 70000})
    with pytest.raises(StackError, match="nginx refused") as err:
        nginx.configure(bad, nginx_binary)
    assert "70000" in str(err.value)


def test_a_test_edge_and_origin_are_named_by_port_the_default_ones_plainly(settings):
    assert (nginx.name(settings), origin.name(settings)) == ("edge-18088", "origin-18089")
    default = Settings(home=settings.home)
    assert (nginx.name(default), origin.name(default)) == ("edge", "origin")
    assert nginx.home(default) == default.stack_dir / "nginx"


def test_the_origin_reads_the_settings_that_start_it_from_its_environment(settings, monkeypatch):
    s = settings.model_copy(
        update={
            "cassandra_keyspace": "ks_x",
            "cassandra_hosts": ["127.0.0.2", "127.0.0.3"],
            "media_scale": 0.25,
        }
    )
    for key, value in origin.env(s).items():
        monkeypatch.setenv(key, value)
    seen = Settings()
    assert seen.cassandra_keyspace == "ks_x"
    assert seen.cassandra_hosts == ["127.0.0.2", "127.0.0.3"]
    assert (seen.media_scale, seen.origin_port) == (0.25, 18089)


def test_served_size_is_the_scaled_variant_size_and_never_zero():
    assert served_bytes(250_000, 0.1) == 25_000
    assert served_bytes(3, 0.1) == 1
    assert served_bytes(media.variant_bytes(7, 4_000_000, "full"), 1.0) == 4_000_000


def test_only_a_video_stream_is_mp4():
    assert content_type("video", "full") == "video/mp4"
    assert content_type("video", "thumb") == "image/jpeg"
    assert content_type("photo", "full") == "image/jpeg"


def test_object_content_is_deterministic_and_differs_by_object():
    assert pattern(5, "thumb") == pattern(5, "thumb")
    assert pattern(5, "thumb") != pattern(5, "full") != pattern(6, "full")


def _get(app: Any, paths: list[str]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://origin") as client:
            return [await client.get(p) for p in paths]

    return asyncio.run(go())


def test_the_origin_refuses_bad_paths_and_says_503_when_cassandra_is_unreachable():
    s = Settings(cassandra_port=1, cassandra_connect_timeout_s=1.0)  # nothing listens on 1
    health, variant, negative, too_big, down, again, stats = _get(
        create_app(s),
        [
            "/health",
            "/media/1/huge",
            "/media/-1/thumb",
            f"/media/{2**63}/thumb",
            "/media/1/thumb",
            "/media/2/thumb",  # within RETRY_CONNECT_S of the failure: no new connect
            "/stats",
        ],
    )
    assert health.status_code == 200
    assert variant.status_code == 400
    assert "unknown media variant 'huge'" in variant.text
    assert (negative.status_code, too_big.status_code) == (400, 400)
    assert (down.status_code, down.headers["Retry-After"]) == (503, "1")
    assert down.headers["Cache-Control"] == "no-store"
    assert "not retried yet" in again.text or again.status_code == 503
    assert stats.json()["unavailable"] == 2


def test_warm_results_count_each_outcome():
    r = EdgeResult()
    r.count("warmed", 10)
    r.count("already", 5)
    r.count("failed", 0)
    assert (r.requested, r.warmed, r.already, r.failed, r.bytes) == (3, 1, 1, 1, 15)


def test_prefetch_keys_are_namespaced_by_project_and_distinct():
    s = Settings(feast_project="p1")
    keys = {page_key(s, 1), page_key(s, 2), continuation_key(s, 1), prefetch_switch_key(s)}
    assert len(keys) == 4
    assert all(k.startswith("feedcast:p1:") for k in keys | {popular_key(s)})


def test_the_warmer_warms_the_configured_edge_else_the_local_one():
    from core.settings import Settings
    from prefetch.warm import EdgeWarmer

    with EdgeWarmer(Settings(edge_port=8123)) as local:
        assert local.base_url == "http://127.0.0.1:8123"
    with EdgeWarmer(Settings(edge_url="http://pop-7.cdn.internal:8080/")) as pop:
        assert pop.base_url == "http://pop-7.cdn.internal:8080"
    with EdgeWarmer(Settings(edge_url="http://a:1"), base_url="http://b:2") as given:
        assert given.base_url == "http://b:2"
