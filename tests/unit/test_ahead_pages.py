"""What the ahead-of-session job warms of a served page: a stored photo's real rendition (the
first its item lists, at its real size), never a simulated object in its place."""

from __future__ import annotations

from dataclasses import replace

from core import cache
from core.settings import Settings
from prefetch.ahead import stored_first
from prefetch.pages import plan_config, plan_items

SHA = "ab" * 32


def _item(post: int, renditions: list[dict]) -> dict:
    return {"post_id": post, "media_kind": "photo", "renditions": renditions}


def test_stored_renditions_are_planned_at_their_real_path_and_size() -> None:
    stored = [
        {"url": f"http://127.0.0.1:8080/media/r/{SHA}.avif", "bytes": 41_000, "format": "avif"},
        {"url": f"http://127.0.0.1:8080/media/r/{SHA}.webp", "bytes": 52_000, "format": "webp"},
    ]
    simulated = [{"url": "http://127.0.0.1:8080/media/p/7/full", "bytes": 300_000}]
    page = [_item(1, stored), _item(2, simulated), _item(3, [])]
    first = stored_first(page)
    assert first == {1: (f"/media/r/{SHA}.avif", 41_000)}  # the first listed, at its size

    s = Settings()
    items = [cache.CachedItem(p, 0, 0, 0.0, 0.0, "photo", 300_000) for p in (1, 2, 3)]
    cfg = replace(plan_config(s), first_screen=0)  # as the ahead job plans: nothing shown yet
    actions = plan_items(s, items, 0.99, at=None, cfg=cfg, stored=first)
    by_post = {a.post_id: a for a in actions}
    assert by_post[1].path == f"/media/r/{SHA}.avif" and by_post[1].bytes == 41_000
    assert 2 not in by_post or not by_post[2].path.startswith("/media/r/")
