"""The feed API's response models: what a page, an item and a rendition look like on the wire.

Apart from :mod:`serving.feed` so that what only needs the shapes (the upload tier, the HTTP
helpers) does not import the ranking path (torch, Feast, LightGBM: ~8 s of CPU at every
replica start).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

I64 = 2**63 - 1


# thumb, full, or wNNN: an uploaded photo's width (an original narrower than every rendition
# width gets one at its own width, e.g. w242).
VARIANT_PATTERN = r"^(thumb|full|w[1-9][0-9]{0,4})$"
Format = Literal["jpeg", "webp", "avif", "mp4"]


class Rendition(BaseModel):
    """One object a client can draw the post from, at the CDN edge."""

    variant: str = Field(
        pattern=VARIANT_PATTERN,
        description="thumb: the small feed image or a video's poster; full: the photo or stream; "
        "wNNN: an uploaded photo's rendition NNN pixels wide (never wider than the original).",
    )
    format: Format = Field(
        description="An uploaded photo comes in each of jpeg (progressive), webp and avif, "
        "smallest first: take the first the client decodes."
    )
    width: int = Field(ge=1, le=16_384, description="Pixels.")
    height: int = Field(ge=1, le=16_384, description="Pixels.")
    bytes: int = Field(ge=1, le=I64, description="Content-Length the edge answers with.")
    url: str = Field(description="GET it from the edge (public, cacheable).")


MediaKind = Literal["photo", "video", "unknown"]
Source = Literal["timeline", "pull", "explore", "unknown"]


class FeedItem(BaseModel):
    post_id: int = Field(ge=0, le=I64)
    author_id: int = Field(ge=0, le=I64)
    created_at: datetime = Field(description="When the post was made (RFC 3339, UTC).")
    media_kind: MediaKind
    source: Source = Field(
        description="The candidate source: followed accounts' fan-out, a big account pulled at "
        "read time, or the popular list (out of network)."
    )
    position: int = Field(ge=0, le=100, description="0-based slot in this page.")
    renditions: list[Rendition] = Field(
        description="Empty when the post's media could not be read (see `degraded`)."
    )
    score: float | None = Field(None, description="The ranking score; only with debug=true.")


class FeedPage(BaseModel):
    user_id: int = Field(ge=1, le=I64)
    items: list[FeedItem]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page of this session; null when the session "
        "is exhausted (or could not be stored: see `degraded`)."
    )
    session: Literal["new", "continued", "restarted"] = Field(
        description="new: a first page, ranked now; continued: the next page of a session; "
        "restarted: the cursor's session expired or was lost, so this is a new first page."
    )
    page: int = Field(ge=0, le=2**32 - 1, description="0-based page of the session.")
    model_version: str
    candidates: int = Field(ge=0, le=I64, description="Candidates the session ranked.")
    sources: dict[str, Annotated[int, Field(ge=0, le=I64)]] = Field(
        description="Candidates per source (first pages)."
    )
    degraded: list[str] = Field(description="Steps that fell back to a degraded path.")
    request_id: str
