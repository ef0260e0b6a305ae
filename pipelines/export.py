"""Incremental export: the served log in Cassandra since the lake's watermark, labelled.

``export_log`` reads, for every user and every day bucket of the window, the pages served
(``impressions_by_user``), the candidate sets (``candidates_by_user``) and the events
(``interactions_by_user``), joins each impression to the likes, comments, saves and dwell that
followed it, and writes parquet shaped exactly like the lake's. ``commit_export`` merges such
an export into the lake, deduplicated by each table's key, and then moves the watermark.

What Cassandra does not record is filled in honestly and said here once:

- ``request_id``: the simulator's logged pages carry integer ids (kept as they are); the live
  service's uuids become ``2**62 | blake2b(id) & (2**62 - 1)``, stable and never equal to an
  integer id below 2**62.
- ``propensity`` missing (pages logged before schema v2): 1.0, the live service's value (its
  pages are deterministic). ``shown_propensity`` missing (pages the service logs without it):
  its ``propensity`` — the probability of the slot, a lower bound of the probability of the page.
- ``explored`` missing: False (the live service never randomises a page). ``candidates`` of a
  request without a logged candidate set: its page size, a lower bound.
- ``dwell_s`` of an impression without a dwell event: 0.0.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import PreparedStatement
from tqdm import tqdm

from core import constants as C
from core.db import TUPLES, connect
from core.settings import Settings
from core.statements import LogStatements
from core.time import as_utc, day_bucket
from simulator.writer import replace_json, replace_parquet

WINDOW_FILE = "window.json"
MANIFEST = "manifest.json"
DWELL = "dwell"
CHUNK = 2_000  # partitions read per progress step
HASHED_BIT = 1 << 62
# Each exported table and the key it is deduplicated by when merged into the lake.
KEYS: dict[str, list[str]] = {
    "impressions": [C.REQUEST_ID, C.POSITION],
    "interactions": ["event_id"],
    "requests": [C.REQUEST_ID],
    "candidates": [C.REQUEST_ID, "chrono_rank"],
}
_IMP = [C.USER_ID, C.EVENT_TS, C.REQUEST_ID, C.POSITION, C.POST_ID, C.AUTHOR_ID]
IMPRESSION_COLUMNS = [*_IMP, "model_version", "propensity", "shown_propensity", "explored"]
EVENT_COLUMNS = [C.USER_ID, C.EVENT_TS, "event_id", C.POST_ID, C.AUTHOR_ID, "kind", "dwell_s"]
CANDIDATE_COLUMNS = [C.USER_ID, C.EVENT_TS, C.REQUEST_ID, "chrono_rank", C.POST_ID, C.AUTHOR_ID]


class ExportGapError(RuntimeError):
    """The export starts after the lake ends: committing it would leave a hole in the log."""


@dataclass(frozen=True)
class ExportResult:
    window_start: datetime  # exclusive: the lake's watermark when the export ran
    window_end: datetime  # inclusive: impressions served up to here
    rows: dict[str, int]
    out_dir: Path


def request_key(request_id: str) -> int:
    """The lake's int64 request id of a logged text id (stable across runs and machines)."""
    if request_id.isdigit() and int(request_id) < HASHED_BIT:
        return int(request_id)
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return HASHED_BIT | (int.from_bytes(digest, "big") & (HASHED_BIT - 1))


def lake_watermark(world_dir: Path) -> datetime:
    """Up to when the lake holds the log: the manifest's ``log_watermark``, or for a lake
    written before it existed, its newest impression."""
    manifest = json.loads((world_dir / MANIFEST).read_text())
    if "log_watermark" in manifest:
        return as_utc(datetime.fromisoformat(manifest["log_watermark"]))
    imp = pd.read_parquet(world_dir / "impressions.parquet", columns=[C.EVENT_TS])
    return as_utc(imp[C.EVENT_TS].max().to_pydatetime())


def label_impressions(
    impressions: pd.DataFrame, events: pd.DataFrame, attribution_window_s: float
) -> pd.DataFrame:
    """Each impression with its ``like``/``comment``/``save``, ``dwell_s`` and graded ``label``.

    An event of the same user and post counts for the latest impression served at or before it,
    at most ``attribution_window_s`` before it (last touch: a post shown twice gets the event
    once). ``impressions``: user_id, post_id, event_timestamp (served); ``events``: user_id,
    post_id, event_timestamp, kind, dwell_s. Pure: no I/O.
    """
    imp = impressions.reset_index(drop=True)
    served = imp[[C.USER_ID, C.POST_ID, C.EVENT_TS]].assign(row=np.arange(len(imp)))
    ev = events[events["kind"].isin([*C.ENGAGEMENT_KINDS, DWELL])]
    hit = pd.DataFrame({"row": [], "kind": [], "dwell_s": []})
    if len(ev) and len(imp):
        keys = {C.USER_ID: np.int64, C.POST_ID: np.int64}
        ev = ev[[*keys, C.EVENT_TS, "kind", "dwell_s"]].astype(keys)
        # A dwell event is stamped when the item left the screen: it belongs to the impression
        # on screen when the view began (its time less its seconds, within 1 ms of rounding),
        # not to a later showing of the same post that the view overlaps.
        began = ev[C.EVENT_TS] - pd.to_timedelta(ev["dwell_s"].fillna(0.0), unit="s")
        match = ev[C.EVENT_TS].where(ev["kind"] != DWELL, began + pd.Timedelta(milliseconds=1))
        ev = ev.assign(match_ts=match.astype(served[C.EVENT_TS].dtype))
        hit = pd.merge_asof(
            ev.sort_values("match_ts"),
            served.astype(keys).rename(columns={C.EVENT_TS: "served_at"}).sort_values("served_at"),
            left_on="match_ts",
            right_on="served_at",
            by=list(keys),
            direction="backward",
            tolerance=pd.Timedelta(seconds=attribution_window_s),
        ).dropna(subset=["row"])
        hit["row"] = hit["row"].astype(np.int64)
    label = np.zeros(len(imp), dtype=np.int64)
    for kind in C.ENGAGEMENT_KINDS:
        imp[kind] = np.isin(imp.index, hit.loc[hit["kind"] == kind, "row"])
        label = np.maximum(label, np.where(imp[kind], C.RELEVANCE[kind], 0))
    dwell = hit[hit["kind"] == DWELL].groupby("row")["dwell_s"].max()
    imp["dwell_s"] = imp.index.map(dwell).to_numpy(np.float64)
    imp["dwell_s"] = imp["dwell_s"].fillna(0.0)
    imp[C.LABEL] = label
    return imp


def lake_impressions(
    raw: pd.DataFrame, events: pd.DataFrame, follows: pd.DataFrame, attribution_window_s: float
) -> pd.DataFrame:
    """Served pages as read from Cassandra (:data:`IMPRESSION_COLUMNS`, text request ids) →
    rows of the lake's impressions table, labelled. Pure: no I/O."""
    imp = label_impressions(raw, events, attribution_window_s)
    followed = pd.MultiIndex.from_frame(follows[[C.USER_ID, "followee_id"]])
    propensity = imp["propensity"].astype(np.float64).fillna(1.0)
    return pd.DataFrame(
        {
            C.REQUEST_ID: imp[C.REQUEST_ID].map(request_key).astype(np.int64),
            C.USER_ID: imp[C.USER_ID].astype(np.int64),
            C.POST_ID: imp[C.POST_ID].astype(np.int64),
            C.AUTHOR_ID: imp[C.AUTHOR_ID].astype(np.int64),
            C.EVENT_TS: imp[C.EVENT_TS],
            C.POSITION: imp[C.POSITION].astype(np.int64),
            **{k: imp[k].astype(bool) for k in C.ENGAGEMENT_KINDS},
            "dwell_s": imp["dwell_s"],
            C.LABEL: imp[C.LABEL],
            "propensity": propensity,
            "shown_propensity": imp["shown_propensity"].astype(np.float64).fillna(propensity),
            "in_network": pd.MultiIndex.from_arrays([imp[C.USER_ID], imp[C.AUTHOR_ID]]).isin(
                followed
            ),
            # Not a lake column: the requests table takes it (dropped when written).
            "explored": imp["explored"].astype("boolean").fillna(False).astype(bool),
        }
    )


def _fetch(
    session: Session,
    stmt: PreparedStatement,
    params: Sequence[tuple[Any, ...]],
    columns: list[str],
    *,
    concurrency: int,
    desc: str,
    progress: bool,
) -> pd.DataFrame:
    """Every row of ``stmt`` over ``params`` (one partition each), read concurrently.

    Requests run under the tuple profile, whose timeout is ``cassandra_request_timeout_s``; a
    failed partition fails the export (it is re-run whole, so nothing is half-exported).
    """
    rows: list[tuple[Any, ...]] = []
    with tqdm(total=len(params), desc=f"export {desc}", unit="part", disable=not progress) as bar:
        for i in range(0, len(params), CHUNK):
            chunk = params[i : i + CHUNK]
            for _, rs in execute_concurrent_with_args(
                session,
                stmt,
                chunk,
                concurrency=concurrency,
                raise_on_first_error=True,
                execution_profile=TUPLES,
            ):
                rows.extend(rs)  # further pages of a large partition are fetched here
            bar.update(len(chunk))
    frame = pd.DataFrame(rows, columns=columns)
    frame[C.EVENT_TS] = pd.to_datetime(frame[C.EVENT_TS], utc=True).astype("datetime64[ns, UTC]")
    return frame


def _partitions(
    users: Sequence[int], start: datetime, end: datetime
) -> list[tuple[int, int, datetime, datetime]]:
    days = range(day_bucket(start), day_bucket(end) + 1)
    return [(u, d, start, end) for u in users for d in days]


def _conform(frame: pd.DataFrame, lake_file: Path) -> pd.DataFrame:
    """``frame`` with exactly the columns and dtypes of the lake table ``lake_file``."""
    dtypes = pq.read_schema(lake_file).empty_table().to_pandas().dtypes
    missing = [c for c in dtypes.index if c not in frame.columns]
    if missing:
        raise ValueError(f"export of {lake_file.name} lacks lake columns {missing}")
    return frame[list(dtypes.index)].astype(dtypes.to_dict()).reset_index(drop=True)


def export_log(
    settings: Settings,
    out_dir: Path,
    *,
    upto: datetime | None = None,
    progress: bool = False,
) -> ExportResult:
    """Export the log served after the lake's watermark, up to ``upto``, into ``out_dir``.

    ``upto`` defaults to now minus ``label_delay_s``, so that the labels of the newest pages
    have arrived; events are read up to ``upto + attribution_window_s`` for the labels, and
    those up to ``upto`` are exported themselves. Writes impressions, interactions, requests and
    candidates parquet in the lake's schema, and ``window.json``.
    """
    world = settings.world_dir
    if not (world / MANIFEST).exists():
        raise FileNotFoundError(f"no lake under {world}: run `feedcast world generate` first")
    start = lake_watermark(world)
    end = as_utc(upto) if upto else datetime.now(UTC) - timedelta(seconds=settings.label_delay_s)
    end = max(end, start)  # an empty window, not a negative one
    events_end = end + timedelta(seconds=settings.attribution_window_s)
    kw: dict[str, Any] = {"concurrency": settings.cassandra_write_concurrency, "progress": progress}

    cluster, session = connect(settings)
    try:
        stmts = LogStatements(session, settings)
        users = [
            r[0]
            for r in session.execute(
                stmts.all_users,
                timeout=settings.cassandra_request_timeout_s,
                execution_profile=TUPLES,
            )
        ]
        window = _partitions(users, start, end) if end > start else []
        raw = _fetch(
            session, stmts.impressions_window, window, IMPRESSION_COLUMNS, desc="pages", **kw
        )
        cand = _fetch(
            session, stmts.candidates_window, window, CANDIDATE_COLUMNS, desc="candidates", **kw
        )
        labels = _partitions(users, start, events_end) if end > start else []
        events = _fetch(
            session, stmts.interactions_window, labels, EVENT_COLUMNS, desc="events", **kw
        )
    finally:
        cluster.shutdown()

    follows = pd.read_parquet(world / "follows.parquet")
    imp = lake_impressions(raw, events, follows, settings.attribution_window_s)
    frames = {
        "impressions": imp,
        "interactions": _interactions(events, end, imp, pd.read_parquet(world / "posts.parquet")),
        "requests": _requests(imp, cand),
        "candidates": _candidates(cand, follows),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, frame in frames.items():
        replace_parquet(_conform(frame, world / f"{name}.parquet"), out_dir / f"{name}.parquet")
        rows[name] = len(frame)
    rows["partitions"] = len(window) + len(labels)
    replace_json(
        {"window_start": start.isoformat(), "window_end": end.isoformat(), "rows": rows},
        out_dir / WINDOW_FILE,
    )
    return ExportResult(start, end, rows, out_dir)


def _interactions(
    events: pd.DataFrame, end: datetime, imp: pd.DataFrame, posts: pd.DataFrame
) -> pd.DataFrame:
    """Likes, comments and saves up to ``end`` (later ones belong to the next window); an event
    sent without its author gets it from the post."""
    ev = events[events["kind"].isin(C.ENGAGEMENT_KINDS) & (events[C.EVENT_TS] <= end)]
    author = pd.concat(
        [posts.set_index(C.POST_ID)[C.AUTHOR_ID], imp.set_index(C.POST_ID)[C.AUTHOR_ID]]
    )
    author = author[~author.index.duplicated()]
    ev = ev.assign(**{C.AUTHOR_ID: ev[C.AUTHOR_ID].fillna(ev[C.POST_ID].map(author))})
    return ev.dropna(subset=[C.AUTHOR_ID]).sort_values([C.EVENT_TS, "event_id"])


def _requests(imp: pd.DataFrame, cand: pd.DataFrame) -> pd.DataFrame:
    """One row per served page; its candidate count from the logged set, else its page size."""
    req = (
        imp.groupby(C.REQUEST_ID, sort=False)
        .agg(
            **{
                C.USER_ID: (C.USER_ID, "first"),
                C.EVENT_TS: (C.EVENT_TS, "min"),
                "page": (C.POSITION, "size"),
                "explored": ("explored", "any"),
            }
        )
        .reset_index()
    )
    logged = cand[C.REQUEST_ID].map(request_key).value_counts()
    req["candidates"] = req[C.REQUEST_ID].map(logged).fillna(req["page"]).astype(np.int64)
    return req.sort_values([C.EVENT_TS, C.REQUEST_ID])


def _candidates(cand: pd.DataFrame, follows: pd.DataFrame) -> pd.DataFrame:
    followed = pd.MultiIndex.from_frame(follows[[C.USER_ID, "followee_id"]])
    return cand.assign(
        **{C.REQUEST_ID: cand[C.REQUEST_ID].map(request_key).astype(np.int64)},
        in_network=pd.MultiIndex.from_arrays([cand[C.USER_ID], cand[C.AUTHOR_ID]]).isin(followed),
    ).sort_values([C.REQUEST_ID, "chrono_rank"])


def commit_export(settings: Settings, export_dir: Path) -> dict[str, int]:
    """Merge an export into the lake; returns the rows each table gained.

    Each table is deduplicated by its key (:data:`KEYS`, the lake's row first) and replaced
    atomically; the manifest's watermark moves last. Committing the same export twice changes
    nothing, and a crash between the tables and the manifest is healed by exporting again from
    the old watermark and committing that.
    """
    world = settings.world_dir
    window = json.loads((export_dir / WINDOW_FILE).read_text())
    start = as_utc(datetime.fromisoformat(window["window_start"]))
    end = as_utc(datetime.fromisoformat(window["window_end"]))
    watermark = lake_watermark(world)
    if start > watermark:
        raise ExportGapError(
            f"export {export_dir} starts at {start.isoformat()} but the lake ends at "
            f"{watermark.isoformat()}: export again from the lake's watermark"
        )
    added = {}
    for name, key in KEYS.items():
        lake = pd.read_parquet(world / f"{name}.parquet")
        new = pd.read_parquet(export_dir / f"{name}.parquet")
        merged = pd.concat([lake, new], ignore_index=True).drop_duplicates(key, keep="first")
        added[name] = len(merged) - len(lake)
        if added[name]:
            replace_parquet(_conform(merged, world / f"{name}.parquet"), world / f"{name}.parquet")
    manifest = json.loads((world / MANIFEST).read_text())
    manifest["log_watermark"] = max(end, watermark).isoformat()
    rows = manifest.setdefault("rows", {})
    rows["impressions"] = pq.read_metadata(world / "impressions.parquet").num_rows
    replace_json(manifest, world / MANIFEST)
    return added
