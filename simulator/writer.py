"""Write a world to Cassandra (concurrent prepared writes, fan-out on write) and to parquet."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import PreparedStatement
from tqdm import tqdm

from core import constants as C
from core import context
from core.settings import Settings
from core.statements import LogStatements, Statements
from core.time import day_buckets
from simulator.world import World

CHUNK = 5_000
LOG_TABLES = ("users", "posts", "follows", "requests", "candidates", "impressions", "interactions")
TRUTH_FILE = "truth.npz"
# What live traffic writes, and what a held-back world keeps for `world advance`.
SERVED_LOG = ("requests", "candidates", "impressions", "interactions")
FUTURE_DIR = "future"
CURSOR_FILE = "cursor.json"
CASSANDRA_LAYOUT = 6  # the schema version whose read tables the writer fills
LOGGING_POLICY = "logging-policy"  # model_version of the simulator's logged pages


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
    now_ms = context.to_ms(datetime.now(UTC))
    days = settings.timeline_days
    tl = timeline_rows(world, settings.pull_follower_threshold)
    counts["timeline"] = _write(
        session,
        s.insert_feed,
        context.feed_args(
            zip(
                tl[C.USER_ID].tolist(),
                _epoch_ms(tl["created_at"]),
                tl[C.POST_ID].tolist(),
                tl[C.AUTHOR_ID].tolist(),
                tl["topic"].fillna(0).astype(int).tolist(),
                strict=True,
            ),
            now_ms,
            days,
        ),
        desc="timelines",
        **kw,
    )
    # Each user's read context (core.context): known, whom they follow.
    _write(
        session,
        s.context_known,
        [(u,) for u in world.users[C.USER_ID].tolist()],
        desc="users' context",
        **kw,
    )
    followees: dict[int, dict[int, int]] = {}
    for u, f, n in zip(
        follows[C.USER_ID].tolist(),
        follows["followee_id"].tolist(),
        follows["followee_followers"].tolist(),
        strict=True,
    ):
        followees.setdefault(int(u), {})[int(f)] = int(n)
    _write(
        session,
        s.context_follow,
        [(m, u) for u, m in followees.items()],
        desc="follows' context",
        **kw,
    )
    _write(
        session,
        s.context_engaged,
        _engaged(world.interactions, now_ms, days),
        desc="engaged context",
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


def _epoch_ms(times: pd.Series) -> list[int]:
    return (pd.to_datetime(times, utc=True).astype("int64") // 1_000_000).tolist()


def _engaged(events: pd.DataFrame, now_ms: int, days: int) -> list[tuple[Any, ...]]:
    """``context_engaged`` arguments for the posts of interaction rows (core.context)."""
    return list(
        context.engaged_args(
            zip(
                events[C.USER_ID].tolist(),
                events[C.POST_ID].tolist(),
                _epoch_ms(events[C.EVENT_TS]),
                strict=True,
            ),
            now_ms,
            days,
        )
    )


def replace_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` atomically: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def replace_json(data: Mapping[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def write_parquet(world: World, out: Path, watermark: datetime | None = None) -> Path:
    """The logs Feast and training read, plus a manifest naming the world's config.

    ``log_watermark`` in the manifest: the log holds every event up to it (the world's end
    unless part of the log was held back).
    """
    out.mkdir(parents=True, exist_ok=True)
    for name in LOG_TABLES:
        replace_parquet(getattr(world, name), out / f"{name}.parquet")
    world.truth.save(out / ".truth.npz")
    (out / ".truth.npz").replace(out / TRUTH_FILE)  # for evaluation only: never a feature
    replace_json(
        {
            "config": json.loads(world.config.model_dump_json()),
            "rows": {
                n: len(getattr(world, n)) for n in ("users", "posts", "follows", "impressions")
            },
            "log_watermark": (watermark or world.config.end).isoformat(),
            # What the Cassandra writer lays out (v6: feed_by_user + user_context): a world
            # written by an older writer is not reused (`world rebuild-context` migrates one).
            "cassandra_layout": CASSANDRA_LAYOUT,
        },
        out / "manifest.json",
    )
    return out


# --- Held-back log: the simulated days that `world advance` later serves as live traffic ---


def row_times(frames: Mapping[str, pd.DataFrame], name: str) -> pd.Series:
    """When each row of a served-log table happened; a candidate set at its request's time."""
    if name == "candidates":
        at = frames["requests"].set_index(C.REQUEST_ID)[C.EVENT_TS]
        return frames["candidates"][C.REQUEST_ID].map(at)
    return frames[name][C.EVENT_TS]


def split_log(
    frames: Mapping[str, pd.DataFrame], cutoff: datetime
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The served log up to ``cutoff`` (inclusive) and after it, table by table."""
    before, after = {}, {}
    for name in SERVED_LOG:
        late = (row_times(frames, name) > pd.Timestamp(cutoff)).to_numpy()
        before[name] = frames[name][~late].reset_index(drop=True)
        after[name] = frames[name][late].reset_index(drop=True)
    return before, after


def hold_back(world: World, cutoff: datetime) -> tuple[World, dict[str, pd.DataFrame]]:
    """The world as the lake sees it at ``cutoff``, and the log after it.

    The held-back impressions carry their page's ``explored`` flag: their request may be
    served by an earlier ``advance`` than they are (a page straddling the step).
    """
    frames = {n: getattr(world, n) for n in SERVED_LOG}
    explored = world.requests.set_index(C.REQUEST_ID)["explored"]
    frames["impressions"] = world.impressions.assign(
        explored=world.impressions[C.REQUEST_ID].map(explored).astype(bool)
    )
    lake, future = split_log(frames, cutoff)
    lake["impressions"] = lake["impressions"].drop(columns="explored")
    return dataclasses.replace(world, **lake), future


def write_future(world_dir: Path, future: Mapping[str, pd.DataFrame], cursor: datetime) -> None:
    """Keep the held-back log under ``world_dir/future`` (never read by features or training).

    The files first, then the cursor (how far `advance` has got): a crash in between leaves
    rows that a re-run writes again as upserts.
    """
    folder = world_dir / FUTURE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name in SERVED_LOG:
        replace_parquet(future[name], folder / f"{name}.parquet")
    replace_json({"advanced_to": cursor.isoformat()}, folder / CURSOR_FILE)


def drop_future(world_dir: Path) -> None:
    shutil.rmtree(world_dir / FUTURE_DIR, ignore_errors=True)


def read_future(world_dir: Path) -> tuple[dict[str, pd.DataFrame], datetime] | None:
    """The held-back log and its cursor, or None when the world holds nothing back."""
    folder = world_dir / FUTURE_DIR
    if not (folder / CURSOR_FILE).exists():
        return None
    cursor = datetime.fromisoformat(json.loads((folder / CURSOR_FILE).read_text())["advanced_to"])
    return {n: pd.read_parquet(folder / f"{n}.parquet") for n in SERVED_LOG}, cursor


def write_served_log(
    frames: Mapping[str, pd.DataFrame],
    session: Session,
    settings: Settings,
    progress: bool = False,
) -> dict[str, int]:
    """Write simulated traffic the way the live service and its event ingest leave it.

    Pages into ``impressions_by_user`` (text request id, the logging policy's propensities) and
    ``candidates_by_user``; likes, comments and saves into both interaction tables; and one
    ``dwell`` event per impression carrying its seconds, stamped when the item left the screen.
    Every write is an upsert of a fixed key, so a repeated call changes nothing.
    """
    s = LogStatements(session, settings)
    kw: dict[str, Any] = {"concurrency": settings.cassandra_write_concurrency, "progress": progress}
    imp = frames["impressions"]
    imp = imp.assign(
        day=day_buckets(imp[C.EVENT_TS]),
        rid=imp[C.REQUEST_ID].astype(str),
        model_version=LOGGING_POLICY,
    )
    req = frames["requests"][[C.REQUEST_ID, C.USER_ID, C.EVENT_TS]]
    cand = frames["candidates"].merge(req, on=C.REQUEST_ID)
    cand = cand.assign(day=day_buckets(cand[C.EVENT_TS]), rid=cand[C.REQUEST_ID].astype(str))
    inter = frames["interactions"]
    inter = inter.assign(day=day_buckets(inter[C.EVENT_TS]))
    dwell_ts = (imp[C.EVENT_TS] + pd.to_timedelta(imp["dwell_s"], unit="s")).dt.floor("ms")
    dwell = imp.assign(
        **{C.EVENT_TS: dwell_ts},
        day=day_buckets(dwell_ts),
        event_id=[f"sim-{r}-{p}-dwell" for r, p in zip(imp["rid"], imp[C.POST_ID], strict=True)],
        kind="dwell",
    )
    imp_cols = [C.USER_ID, "day", C.EVENT_TS, "rid", C.POSITION, C.POST_ID, C.AUTHOR_ID]
    imp_cols += ["model_version", "propensity", "shown_propensity", "explored"]
    counts = {
        "impressions": _write(
            session, s.insert_logged_impression, _tuples(imp, imp_cols), desc="impressions", **kw
        ),
        "candidates": _write(
            session,
            s.insert_candidate,
            _tuples(
                cand, [C.USER_ID, "day", C.EVENT_TS, "rid", "chrono_rank", C.POST_ID, C.AUTHOR_ID]
            ),
            desc="candidates",
            **kw,
        ),
    }
    by_user = [C.USER_ID, "day", C.EVENT_TS, "event_id", C.POST_ID, C.AUTHOR_ID, "kind"]
    by_post = [C.POST_ID, C.EVENT_TS, "event_id", C.USER_ID, "kind"]
    counts["interactions"] = _write(
        session, s.insert_interaction_by_user, _tuples(inter, by_user), desc="interactions", **kw
    )
    _write(session, s.insert_interaction_by_post, _tuples(inter, by_post), desc="by post", **kw)
    counts["dwell"] = _write(
        session, s.insert_event_by_user, _tuples(dwell, [*by_user, "dwell_s"]), desc="dwell", **kw
    )
    _write(
        session,
        s.insert_event_by_post,
        _tuples(dwell, [*by_post, "dwell_s"]),
        desc="dwell by post",
        **kw,
    )
    now_ms = context.to_ms(datetime.now(UTC))
    engaged = pd.concat(
        [inter[[C.USER_ID, C.POST_ID, C.EVENT_TS]], dwell[[C.USER_ID, C.POST_ID, C.EVENT_TS]]]
    )
    _write(
        session,
        s.context_engaged,
        _engaged(engaged, now_ms, settings.timeline_days),
        desc="engaged context",
        **kw,
    )
    return counts
