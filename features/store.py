"""The feature store for a settings object: config, apply, materialize, online reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from core import constants as C
from core.settings import Settings
from features import definitions
from features.batch import build_feature_tables
from features.definitions import (
    AUTHOR_FIELDS,
    POST_FIELDS,
    REQUEST_FIELDS,
    USER_AUTHOR_FIELDS,
    USER_FIELDS,
    USER_TOPIC_FIELDS,
)
from features.request import REQUEST_EPOCH

FEATURE_COLUMNS = (
    *USER_FIELDS,
    *POST_FIELDS,
    *AUTHOR_FIELDS,
    *USER_TOPIC_FIELDS,
    *USER_AUTHOR_FIELDS,
    *REQUEST_FIELDS,
)


def repo_config(settings: Settings) -> dict[str, object]:
    return {
        "project": settings.feast_project,
        "provider": "local",
        "registry": {
            "registry_type": "file",
            "path": str(settings.feast_dir / "registry.db"),
            "cache_ttl_seconds": 60,
        },
        "offline_store": {"type": "file"},
        "online_store": {
            "type": "redis",
            "connection_string": (
                f"{settings.redis_host}:{settings.redis_port},db={settings.redis_db}"
            ),
        },
        "entity_key_serialization_version": 3,
    }


def open_store(settings: Settings) -> FeatureStore:
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=RepoConfig(repo_path=settings.feast_dir, **repo_config(settings)))


def tables_dir(settings: Settings) -> Path:
    return settings.world_dir / "features"


def apply(settings: Settings) -> dict[str, int]:
    """Compute the feature tables from the world log and register the Feast objects."""
    counts = build_feature_tables(settings.world_dir, tables_dir(settings))
    store = open_store(settings)
    store.apply(definitions.build(tables_dir(settings)).objects())
    # The same config as a feature_store.yaml, for the `feast` CLI (`feast -c <dir> ...`).
    (settings.feast_dir / "feature_store.yaml").write_text(yaml.safe_dump(repo_config(settings)))
    return counts


def materialize(settings: Settings, end: datetime | None = None) -> None:
    """Load the latest feature values into Redis (Feast's materialize over the world period)."""
    store = open_store(settings)
    end = end or datetime.now(UTC)
    start = pd.Timestamp(end) - pd.Timedelta(days=30)
    store.materialize(start_date=start.to_pydatetime(), end_date=end)


def online_features(
    store: FeatureStore,
    user_id: int,
    post_ids: list[int],
    author_ids: list[int],
    topics: list[int],
    request_epoch_s: float,
) -> pd.DataFrame:
    """Feast's online read for a user's candidates; missing values come back as NaN."""
    rows = [
        {
            C.USER_ID: user_id,
            C.POST_ID: p,
            C.AUTHOR_ID: a,
            C.TOPIC: t,
            REQUEST_EPOCH: request_epoch_s,
        }
        for p, a, t in zip(post_ids, author_ids, topics, strict=True)
    ]
    service = store.get_feature_service(definitions.FEATURE_SERVICE)
    df = store.get_online_features(features=service, entity_rows=rows).to_df()
    return df.astype({c: "float64" for c in FEATURE_COLUMNS if c in df})
