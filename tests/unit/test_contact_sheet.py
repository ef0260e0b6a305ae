"""The contact sheet's HTML: a picture per item with stored renditions, formats in the order a
browser should try them, the width nearest the column, nothing unescaped."""

from __future__ import annotations

from pipelines import contact_sheet

D = "ab" * 32


def _r(w: int, fmt: str, ext: str) -> dict:
    return {"variant": f"w{w}", "format": fmt, "width": w, "height": w, "bytes": 100,
            "url": f"http://edge/media/r/{D}.{ext}"}  # fmt: skip


def _item(post: int, renditions: list[dict], kind: str = "photo") -> dict:
    return {
        "post_id": post, "author_id": 1, "position": 0, "source": "timeline",
        "created_at": "2026-01-01T00:00:00Z", "media_kind": kind, "renditions": renditions,
    }  # fmt: skip


def test_items_with_stored_renditions_are_drawn_others_listed(tmp_path):
    stored = [_r(w, f, e) for w in (640, 320) for f, e in (("avif", "avif"), ("webp", "webp"),
              ("jpeg", "jpg"))]  # fmt: skip
    simulated = [{**_r(320, "jpeg", "jpg"), "url": "http://edge/media/7/full"}]
    page = {"user_id": 5, "items": [_item(1, stored), _item(2, simulated, "video")]}
    path, drawn = contact_sheet.write(page, tmp_path / "s.html")
    text = path.read_text()
    assert drawn == 1 and text.count("<picture>") == 1
    at = text.index("<picture>")
    pic = text[at : text.index("</picture>", at)]
    assert pic.index("image/avif") < pic.index("image/webp") < pic.index("<img")
    assert 'width="320"' in pic and f"{D}.jpg" in pic
    assert "video: simulated media" in text and 'id="status"' in text


def test_nothing_from_the_page_reaches_the_html_unescaped(tmp_path):
    bad = _r(320, "jpeg", "jpg") | {"url": 'http://edge/media/r/x.jpg"><script>alert(1)</script>'}
    page = {"user_id": 5, "items": [_item(1, [bad]) | {"created_at": "<b>now</b>"}]}
    text = contact_sheet.write(page, tmp_path / "s.html")[0].read_text()
    assert "<script>alert" not in text and "<b>now" not in text
