"""Online feature reads: Feast's ``get_online_features`` vs our pipelined reader, same rows.

Both read the same materialized world from the same Redis in one process, interleaved (Feast,
ours, Feast, ...) so that a noisy neighbour slows both alike; the figure is the median.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pandas as pd

from core import constants as C
from core.settings import Settings

REPEATS = 30


def _rows(settings: Settings, n: int) -> tuple[int, pd.DataFrame]:
    """The busiest reader and the ``n`` newest posts (the candidates a feed scores are young);
    drawn again with replacement when the world has fewer."""
    users = pd.read_parquet(settings.world_dir / "impressions.parquet", columns=[C.USER_ID])
    user = int(users[C.USER_ID].value_counts().index[0])
    posts = pd.read_parquet(
        settings.world_dir / "posts.parquet",
        columns=[C.POST_ID, C.AUTHOR_ID, "topic", "created_at"],
    ).sort_values("created_at")
    rows = posts.tail(n) if len(posts) >= n else posts.sample(n, replace=True, random_state=0)
    return user, rows.reset_index(drop=True)


def feature_read_speedup(
    settings: Settings, n: int = 500, repeats: int = REPEATS
) -> dict[str, Any]:
    """Median wall time of one ``n``-candidate read by Feast and by :class:`OnlineReader`.

    Raises:
        RuntimeError: No world, no registry or nothing materialized for ``settings``.
    """
    from features.online import OnlineReader
    from features.store import FEATURE_COLUMNS, online_features, open_store

    if not (settings.world_dir / "posts.parquet").exists():
        raise RuntimeError(f"no world under {settings.world_dir}: run `make demo` first")
    if not (settings.feast_dir / "registry.db").exists():
        raise RuntimeError(f"no Feast registry under {settings.feast_dir}: run `make demo` first")
    store = open_store(settings)
    reader = OnlineReader(settings, store)
    user, rows = _rows(settings, n)
    args = (user, rows[C.POST_ID].tolist(), rows[C.AUTHOR_ID].tolist(), rows["topic"].tolist())
    try:
        now = time.time()
        ours = reader.read(*args, now)
        feast = online_features(store, *args, now)[list(FEATURE_COLUMNS)].to_numpy(np.float64)
        if np.isnan(ours[:, FEATURE_COLUMNS.index("post_likes")]).all():
            raise RuntimeError("no post features in Redis: run `feedcast features materialize`")
        identical = bool(np.array_equal(ours, feast, equal_nan=True))
        feast_s, ours_s = [], []
        for _ in range(repeats + 2):  # the first two of each warm up (registry, connections)
            now = time.time()
            t0 = time.perf_counter()
            online_features(store, *args, now)
            t1 = time.perf_counter()
            reader.read(*args, now)
            t2 = time.perf_counter()
            feast_s.append(t1 - t0)
            ours_s.append(t2 - t1)
    finally:
        reader.close()
    feast_ms = statistics.median(feast_s[2:]) * 1e3
    ours_ms = statistics.median(ours_s[2:]) * 1e3
    return {
        f"feast_ms_{n}": feast_ms,
        f"ours_ms_{n}": ours_ms,
        f"feature_read_speedup_{n}": feast_ms / ours_ms,
        "identical": identical,
        "rows": n,
        "distinct_posts": int(rows[C.POST_ID].nunique()),
        "distinct_authors": int(rows[C.AUTHOR_ID].nunique()),
        "repeats": repeats,
    }
