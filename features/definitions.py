"""The Feast objects: entities, sources, feature views and versioned feature services.

Declared in dependency order. Sources point at the feature tables under a world's folder, so
the objects are built by :func:`build` from that folder rather than at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from core import constants as C

TTL = timedelta(days=2)  # snapshots come every 6 h; older than this means the pipeline stalled

user = Entity(
    name="user", join_keys=[C.USER_ID], value_type=ValueType.INT64, description="A feed reader."
)
post = Entity(
    name="post",
    join_keys=[C.POST_ID],
    value_type=ValueType.INT64,
    description="A photo or video post.",
)
author = Entity(
    name="author",
    join_keys=[C.AUTHOR_ID],
    value_type=ValueType.INT64,
    description="A user who posts.",
)

FEATURE_SERVICE = "feed_ranker_v1"


@dataclass(frozen=True)
class Definitions:
    user_stats: FeatureView
    post_stats: FeatureView
    author_stats: FeatureView
    feed_ranker_v1: FeatureService

    def objects(self) -> list[Any]:
        return [
            user,
            post,
            author,
            self.user_stats,
            self.post_stats,
            self.author_stats,
            self.feed_ranker_v1,
        ]


def _source(tables: Path, name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=str(tables / f"{name}.parquet"),
        timestamp_field=C.EVENT_TS,
        created_timestamp_column=C.CREATED_TS,
    )


def build(tables: Path) -> Definitions:
    """Feast objects reading the feature tables in ``tables`` (see features.batch)."""
    user_stats = FeatureView(
        name="user_stats",
        entities=[user],
        ttl=TTL,
        source=_source(tables, "user_stats"),
        schema=[
            Field(name="user_impressions_7d", dtype=Int64),
            Field(name="user_likes_7d", dtype=Int64),
            Field(name="user_like_rate_7d", dtype=Float64),
            Field(name="user_following", dtype=Int64),
        ],
        description="What the user saw and liked over the last 7 days.",
    )
    post_stats = FeatureView(
        name="post_stats",
        entities=[post],
        ttl=TTL,
        source=_source(tables, "post_stats"),
        schema=[
            Field(name="post_impressions", dtype=Int64),
            Field(name="post_likes", dtype=Int64),
            Field(name="post_like_rate", dtype=Float64),
            Field(name="post_topic", dtype=Int64),
        ],
        description="Lifetime engagement of the post so far.",
    )
    author_stats = FeatureView(
        name="author_stats",
        entities=[author],
        ttl=TTL,
        source=_source(tables, "author_stats"),
        schema=[
            Field(name="author_followers", dtype=Int64),
            Field(name="author_posts_7d", dtype=Int64),
            Field(name="author_like_rate_7d", dtype=Float64),
        ],
        description="The author's reach and recent engagement.",
    )
    service = FeatureService(
        name=FEATURE_SERVICE,
        features=[user_stats, post_stats, author_stats],
        description="Features of the v1 LightGBM ranker.",
    )
    return Definitions(user_stats, post_stats, author_stats, service)
