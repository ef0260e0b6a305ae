"""A contact sheet of a feed page: one HTML file that draws the page as an app would.

Each item is a ``<picture>`` offering its renditions (AVIF, then WebP, then JPEG; the browser
takes the first it decodes) at the width a phone's feed column draws, each URL through the
edge, its placeholder size reserved (no layout shift). A line at the top says, once the page
has loaded, how many photos loaded and which did not (``#status``, also what the headless
browser test reads).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

_MIME = {"avif": "image/avif", "webp": "image/webp", "jpeg": "image/jpeg"}

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; background: #fafafa; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; }
#status { margin: 0 0 16px; color: #555; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 6px;
         overflow: hidden; }
img { display: block; width: 100%; height: auto; background: #eee; }
figcaption { padding: 6px 8px; font-size: 12px; color: #555; }
"""

_CHECK = """
window.addEventListener("load", () => {
  const imgs = [...document.querySelectorAll("img")];
  const bad = imgs.filter((i) => !(i.complete && i.naturalWidth > 0));
  const s = document.getElementById("status");
  s.dataset.loaded = imgs.length - bad.length;
  s.dataset.total = imgs.length;
  s.textContent = bad.length
    ? `${bad.length} of ${imgs.length} photos did not load: ` + bad.map((i) => i.alt).join(", ")
    : `all ${imgs.length} photos loaded`;
});
"""


def _picture(item: dict[str, Any], width: int) -> str | None:
    """The item's ``<picture>`` at the rendition nearest ``width`` (at least it, if any)."""
    rs = item.get("renditions") or []
    if not rs or not any("/media/r/" in r["url"] for r in rs):
        return None
    widths = sorted({r["width"] for r in rs})
    w = next((x for x in widths if x >= width), widths[-1])
    chosen = {r["format"]: r for r in rs if r["width"] == w}
    jpeg = chosen.get("jpeg") or next(iter(chosen.values()))
    sources = "".join(
        f'<source type="{_MIME[f]}" srcset="{html.escape(chosen[f]["url"])}">'
        for f in ("avif", "webp")
        if f in chosen
    )
    alt = f"post {item['post_id']}"
    return (
        f'<picture>{sources}<img src="{html.escape(jpeg["url"])}" width="{jpeg["width"]}" '
        f'height="{jpeg["height"]}" alt="{alt}" loading="eager"></picture>'
    )


def write(page: dict[str, Any], path: Path, *, width: int = 320) -> tuple[Path, int]:
    """Write the sheet of ``page`` (a ``GET /v1/feed`` answer) to ``path``; returns the path
    and the number of photos on it (items without stored renditions are listed, not drawn)."""
    figures, drawn = [], 0
    for item in page["items"]:
        pic = _picture(item, width)
        drawn += pic is not None
        caption = (
            f"#{item['position']} · post {item['post_id']} · author {item['author_id']} · "
            f"{item['source']} · {html.escape(str(item['created_at']))}"
        )
        body = (
            pic
            or f"<p>{html.escape(str(item['media_kind']))}: simulated media, no stored photo</p>"
        )
        figures.append(f"<figure>{body}<figcaption>{caption}</figcaption></figure>")
    title = f"feedcast: user {page['user_id']}'s first page"
    doc = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
        f'<p id="status">loading {drawn} photos…</p>'
        f'<div class="sheet">{"".join(figures)}</div><script>{_CHECK}</script></body></html>'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    return path, drawn
