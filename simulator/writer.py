"""Write a world to Cassandra (concurrent prepared writes, fan-out on write) and to parquet."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import PreparedStatement
from tqdm import tqdm

from core import constants as C
from core.settings import Settings
from core.statements import Statements
from core.time import day_buckets
from simulator.world import World

CHUNK = 5_000
LOG_TABLES = ("users", "posts", "follows", "requests", "candidates", "impressions", "interactions")
TRUTH_FILE = "truth.npz"


def _write(
    session: Session,
    stmt: PreparedStatement,
    rows: Sequence[tuple[Any, ...]],
    *,
    desc: str,
    concurrency: int,
    progress: bool,
) -> int:
    with tqdm(total=len(rows), desc=f"cassandra {desc}", unit="row", disable=not progress) as bar:
        for i in range(0, len(rows), CHUNK):
            chunk = rows[i : i + CHUNK]
            execute_concurrent_with_args(
                session, stmt, chunk, concurrency=concurrency, raise_on_first_error=True
            )
            bar.update(len(chunk))
    return len(rows)


def _tuples(df: pd.DataFrame, cols: Iterable[str]) -> list[tuple[Any, ...]]:
    out = df[list(cols)].copy()
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c]):
            out[c] = pd.Series(
                list(pd.to_datetime(out[c], utc=True).dt.to_pydatetime()),
                index=out.index,
                dtype=object,
            )
    return list(out.itertuples(index=False, name=None))


def timeline_rows(world: World, threshold: int) -> pd.DataFrame:
    """Fan-out on write: one row per (follower, post) for authors at or below ``threshold``.

    Authors above it are pulled at read time (Instagram's hybrid), so a celebrity post costs one
    write, not millions.
    """
    followers = world.users.set_index(C.USER_ID)["follower_count"]
    small = world.posts[world.posts[C.AUTHOR_ID].map(followers) <= threshold]
    fan = small.merge(world.follows, left_on=C.AUTHOR_ID, right_on="followee_id")
    fan = fan.assign(day=day_buckets(fan["created_at"]))
    return fan[[C.USER_ID, "day", "created_at", C.POST_ID, C.AUTHOR_ID, "topic"]]


def write_cassandra(
    world: World, session: Session, settings: Settings, progress: bool = False
) -> dict[str, int]:
    s = Statements(session, settings)
    kw: dict[str, Any] = {"concurrency": settings.cassandra_write_concurrency, "progress": progress}
    posts = world.posts.assign(day=day_buckets(world.posts["created_at"]))
    followers = world.users.set_index(C.USER_ID)["follower_count"]
    follows = world.follows.assign(followee_followers=world.follows["followee_id"].map(followers))
    inter = world.interactions.assign(day=day_buckets(world.interactions[C.EVENT_TS]))
    counts = {
        "users": _write(
            session,
            s.insert_user,
            _tuples(world.users, [C.USER_ID, "created_at", "follower_count", "following_count"]),
            desc="users",
            **kw,
        ),
        "posts": _write(
            session,
            s.insert_post,
            _tuples(
                posts, [C.POST_ID, C.AUTHOR_ID, "created_at", "topic", "media_kind", "media_bytes"]
            ),
            desc="posts",
            **kw,
        ),
    }
    _write(
        session,
        s.insert_post_by_author,
        _tuples(posts, [C.AUTHOR_ID, "day", "created_at", C.POST_ID, "topic"]),
        desc="posts_by_author",
        **kw,
    )
    counts["follows"] = _write(
        session,
        s.insert_follow,
        _tuples(follows, [C.USER_ID, "followee_id", "followee_followers"]),
        desc="follows",
        **kw,
    )
    _write(
        session,
        s.insert_follower,
        _tuples(follows, ["followee_id", C.USER_ID]),
        desc="followers",
        **kw,
    )
    counts["timeline"] = _write(
        session,
        s.insert_timeline,
        _tuples(
            timeline_rows(world, settings.pull_follower_threshold),
            [C.USER_ID, "day", "created_at", C.POST_ID, C.AUTHOR_ID, "topic"],
        ),
        desc="timelines",
        **kw,
    )
    counts["interactions"] = _write(
        session,
        s.insert_interaction_by_user,
        _tuples(inter, [C.USER_ID, "day", C.EVENT_TS, "event_id", C.POST_ID, C.AUTHOR_ID, "kind"]),
        desc="interactions",
        **kw,
    )
    _write(
        session,
        s.insert_interaction_by_post,
        _tuples(inter, [C.POST_ID, C.EVENT_TS, "event_id", C.USER_ID, "kind"]),
        desc="interactions_by_post",
        **kw,
    )
    return counts


def write_parquet(world: World, out: Path) -> Path:
    """The logs Feast and training read, plus a manifest naming the world's config."""
    out.mkdir(parents=True, exist_ok=True)
    for name in LOG_TABLES:
        frame: pd.DataFrame = getattr(world, name)
        tmp = out / f".{name}.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(out / f"{name}.parquet")  # atomic: a crash never leaves half a file
    world.truth.save(out / ".truth.npz")
    (out / ".truth.npz").replace(out / TRUTH_FILE)  # for evaluation only: never a feature
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "config": json.loads(world.config.model_dump_json()),
                "rows": {
                    n: len(getattr(world, n)) for n in ("users", "posts", "follows", "impressions")
                },
            },
            indent=2,
        )
    )
    return out
