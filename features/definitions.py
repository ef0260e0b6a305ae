"""The Feast objects: entities, sources, feature views and versioned feature services.

Declared in dependency order. Sources point at the feature tables under a world's folder, so
the objects are built by :func:`build` from that folder rather than at import time.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from core import constants as C
from features.request import REQUEST_EPOCH

DENSE_TTL = timedelta(days=1)  # hourly rows: older than this means the pipeline stalled
PAIR_TTL = timedelta(days=90)  # cumulative pair counts change only with activity

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
topic = Entity(
    name="topic",
    join_keys=[C.TOPIC],
    value_type=ValueType.INT64,
    description="A content topic (post metadata).",
)

request_source = RequestSource(
    name="request_context",
    schema=[Field(name=REQUEST_EPOCH, dtype=Float64)],
    description="When the feed was requested (Unix seconds).",
)

USER_FIELDS = (
    "user_impressions_1h",
    "user_likes_1h",
    "user_impressions_1d",
    "user_likes_1d",
    "user_like_rate_1d",
    "user_impressions_7d",
    "user_likes_7d",
    "user_like_rate_7d",
    "user_engage_rate_7d",
    "user_dwell_mean_7d",
    "user_following",
)
POST_FIELDS = (
    "post_impressions",
    "post_likes",
    "post_like_rate",
    "post_engage_rate",
    "post_impressions_1h",
    "post_likes_1h",
    "post_likes_6h",
    "post_topic",
    "post_is_video",
    "post_media_kb",
    "post_created_epoch_s",
)
AUTHOR_FIELDS = (
    "author_followers",
    "author_posts_7d",
    "author_impressions_7d",
    "author_like_rate_7d",
    "author_save_rate_7d",
)
USER_TOPIC_FIELDS = (
    "user_topic_impressions",
    "user_topic_likes",
    "user_topic_like_rate",
    "user_topic_engagements",
)
USER_AUTHOR_FIELDS = (
    "user_author_impressions",
    "user_author_likes",
    "user_author_like_rate",
    "user_author_engagements",
)
REQUEST_FIELDS = ("post_age_h", "hour_of_day", "day_of_week")

FEATURE_SERVICE_V1 = "feed_ranker_v1"
FEATURE_SERVICE = "feed_ranker_v2"


def request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    """The on-demand transformation: the same function serving calls (features.request).

    Feast ships this function as source text, so it imports what it uses inside its body.
    """
    from features.request import REQUEST_EPOCH, request_time_features  # local: shipped as text

    return request_time_features(inputs[REQUEST_EPOCH], inputs["post_created_epoch_s"])


def _fresh(fn: Any) -> Any:
    """A copy of ``fn``: Feast's decorator rewrites the function's ``__module__`` to __main__,
    after which a second ``build`` in the same process can no longer find its source."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)
    copy.__module__, copy.__doc__ = __name__, fn.__doc__
    return copy


@dataclass(frozen=True)
class Definitions:
    views: dict[str, FeatureView]
    on_demand: Any  # OnDemandFeatureView
    services: dict[str, FeatureService]

    def objects(self) -> list[Any]:
        return [
            user,
            post,
            author,
            topic,
            request_source,
            *self.views.values(),
            self.on_demand,
            *self.services.values(),
        ]


def _view(
    tables: Path,
    name: str,
    entities: list[Entity],
    fields: tuple[str, ...],
    ttl: timedelta,
    description: str,
) -> FeatureView:
    source = FileSource(
        name=f"{name}_source",
        path=str(tables / f"{name}.parquet"),
        timestamp_field=C.EVENT_TS,
        created_timestamp_column=C.CREATED_TS,
    )
    return FeatureView(
        name=name,
        entities=entities,
        ttl=ttl,
        source=source,
        schema=[Field(name=f, dtype=Float64) for f in fields],
        description=description,
    )


def build(tables: Path) -> Definitions:
    """Feast objects reading the feature tables in ``tables`` (see features.batch)."""
    views = {
        "user_stats": _view(
            tables,
            "user_stats",
            [user],
            USER_FIELDS,
            DENSE_TTL,
            "What the user saw and did over the last hour, day and week.",
        ),
        "post_stats": _view(
            tables,
            "post_stats",
            [post],
            POST_FIELDS,
            DENSE_TTL,
            "The post's metadata, engagement so far and recent velocity.",
        ),
        "author_stats": _view(
            tables,
            "author_stats",
            [author],
            AUTHOR_FIELDS,
            DENSE_TTL,
            "The author's reach and recent engagement (quality signals).",
        ),
        "user_topic_stats": _view(
            tables,
            "user_topic_stats",
            [user, topic],
            USER_TOPIC_FIELDS,
            PAIR_TTL,
            "The user's past engagement with the post's topic.",
        ),
        "user_author_stats": _view(
            tables,
            "user_author_stats",
            [user, author],
            USER_AUTHOR_FIELDS,
            PAIR_TTL,
            "The user's past engagement with the author (affinity).",
        ),
    }
    odfv = on_demand_feature_view(
        sources=[views["post_stats"], request_source],
        schema=[Field(name=f, dtype=Float64) for f in REQUEST_FIELDS],
        mode="pandas",
        description="Request-time features: post age at request, hour of day, day of week.",
    )(_fresh(request_features))
    services = {
        FEATURE_SERVICE_V1: FeatureService(
            name=FEATURE_SERVICE_V1,
            features=[
                views["user_stats"][
                    ["user_impressions_7d", "user_likes_7d", "user_like_rate_7d", "user_following"]
                ],
                views["post_stats"][
                    ["post_impressions", "post_likes", "post_like_rate", "post_topic"]
                ],
                views["author_stats"][
                    ["author_followers", "author_posts_7d", "author_like_rate_7d"]
                ],
            ],
            description="The v1 ranker's features.",
        ),
        FEATURE_SERVICE: FeatureService(
            name=FEATURE_SERVICE,
            features=[*views.values(), odfv],
            description="Every feature of the v2 rankers (light and heavy).",
        ),
    }
    return Definitions(views, odfv, services)
