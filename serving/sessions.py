"""Ranked feed sessions: one ranking, many pages.

A first page (no cursor) ranks every candidate and, before it answers, stores the *session* in
Redis: every candidate in the light ranker's order, the heavy ranker's blended score for the
top ``light_keep`` of them, and each page served so far. Later pages (a cursor) are slices of
that session: no re-ranking, never a post already served in it. When a page reaches past the
heavy-scored part, the next ``light_keep`` candidates are heavy-scored then (see
:class:`serving.feed.FeedPath`).

Layout: one Redis hash per session, ``feedcast:<project>:session:<id>`` (one key, so one slot
on Redis Cluster), with a TTL of ``session_ttl_s`` renewed by each page:

| field | value                                                                         |
|-------|-------------------------------------------------------------------------------|
| ``m`` | JSON: user, model version that ranked it, creation time                       |
| ``c`` | the candidates as packed little-endian records (:data:`ROW`), light order     |
| ``p:N``| JSON: page N as ``[row, media_kind, media_bytes]`` triples, written once (HSETNX)|

Page N is written with HSETNX: whoever computes it first wins, and a retried cursor or a
second replica reads the same page. Posts already seen (engaged with) and blocked authors are
dropped when the session is built; the soft rules (author diversity, out-of-network share) apply
per page over what is left.

The Redis of the stack runs with ``maxmemory`` and ``volatile-lru``: sessions (which all have a
TTL) are evicted under memory pressure; Feast's rows (no TTL) never are. A lost session is not
an error: the next cursor restarts it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import redis

from core.settings import Settings
from serving.candidates import SOURCES
from serving.rules import RuleConfig, Scored, apply_rules

ROW = np.dtype(
    [
        ("post", "<i8"),
        ("author", "<i8"),
        ("created", "<f8"),  # unix seconds
        ("topic", "<i4"),
        ("source", "i1"),  # index into SOURCES
        ("in_net", "?"),
        ("score", "<f4"),  # blended heavy score; NaN: not heavy-scored yet
        ("dwell", "<f4"),  # the heavy ranker's E[dwell] s; NaN where it did not run
    ]
)


def key(settings: Settings, session_hex: str) -> str:
    return f"feedcast:{settings.feast_project}:session:{session_hex}"


@dataclass(frozen=True)
class PageItem:
    """One served item: its row in the session and the media it was served with."""

    row: int
    media_kind: str
    media_bytes: int


@dataclass
class FeedSession:
    user_id: int
    session_hex: str
    model_version: str
    created_s: float
    rows: np.ndarray  # ROW records, light order
    pages: list[list[PageItem]] = field(default_factory=list)  # pages 0..n-1 as stored

    def served(self) -> set[int]:
        return {i.row for p in self.pages for i in p}

    def offset(self, page: int | None = None) -> int:
        """Session position of ``page``'s first item (default: after every page held)."""
        return sum(len(p) for p in self.pages[:page])

    def scored_until(self) -> int:
        """Rows heavy-scored: they are a prefix of the light order."""
        unscored = np.flatnonzero(np.isnan(self.rows["score"]))
        return int(unscored[0]) if len(unscored) else len(self.rows)


def pack(
    post: Sequence[int],
    author: Sequence[int],
    created_s: Sequence[float],
    topic: Sequence[int],
    source: Sequence[str] | np.ndarray,  # names, or codes (index into SOURCES)
    in_net: Sequence[bool] | np.ndarray,
) -> np.ndarray:
    rows = np.zeros(len(post), dtype=ROW)
    rows["post"], rows["author"], rows["created"], rows["topic"] = post, author, created_s, topic
    rows["source"] = (
        source if isinstance(source, np.ndarray) else [SOURCES.index(s) for s in source]
    )
    rows["in_net"] = in_net
    rows["score"] = np.nan
    rows["dwell"] = np.nan
    return rows


def next_page(
    sess: FeedSession, limit: int, rules: RuleConfig, removed: np.ndarray | None = None
) -> list[int]:
    """Rows of the next page: the page rules over the heavy-scored rows not served yet, less
    the posts in ``removed`` (sorted ids of posts taken down since the session was ranked).

    The rules take the rows best first and stop once the page is full, so they are first given
    the best ``4 * limit`` (sorted here, in numpy) without backfill, and all of them only when
    that prefix does not fill the page: the same page either way, without building hundreds
    of items."""
    r = sess.rows
    upto = sess.scored_until()
    left = np.ones(upto, dtype=bool)
    left[[k for k in sess.served() if k < upto]] = False
    if removed is not None and len(removed):
        left &= ~np.isin(r["post"][:upto], removed, assume_unique=False)
    rows = np.flatnonzero(left)
    rows = rows[np.argsort(-r["score"][rows], kind="stable")]  # best first, ties in light order

    def page(part: np.ndarray, rule: RuleConfig) -> list[int]:
        posts = r["post"][part].tolist()
        columns = (r[f][part].tolist() for f in ("author", "score", "in_net"))
        items = [Scored(*x) for x in zip(posts, *columns, strict=True)]
        by_post = dict(zip(posts, part.tolist(), strict=True))
        return [by_post[i.post_id] for i in apply_rules(items, limit, config=rule)]

    if 4 * limit < len(rows):
        head = page(rows[: 4 * limit], replace(rules, backfill=False))
        if len(head) == limit:  # filled by the rules alone, within the prefix: final
            return head
    return page(rows, rules)


def unscored_left(sess: FeedSession) -> int:
    return len(sess.rows) - sess.scored_until()


def remaining(sess: FeedSession) -> int:
    """Rows not served by any page held."""
    return len(sess.rows) - len(sess.served())


# -- Redis ---------------------------------------------------------------------------------


def _page_json(page: Sequence[PageItem]) -> bytes:
    return json.dumps([[i.row, i.media_kind, i.media_bytes] for i in page]).encode()


def _page_from(raw: Any) -> list[PageItem]:
    return [PageItem(int(r), str(k), int(b)) for r, k, b in json.loads(raw)]


class SessionStore:
    """Sessions in Redis; every call raises the client's errors (callers degrade)."""

    def __init__(self, settings: Settings, r: redis.Redis) -> None:
        self.s, self.r = settings, r

    def create(self, sess: FeedSession) -> None:
        """Store a new session with its first page (``sess.pages[0]``)."""
        meta = {"u": sess.user_id, "v": sess.model_version, "t": sess.created_s}
        k = key(self.s, sess.session_hex)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(
            k,
            mapping={
                "m": json.dumps(meta),
                "c": sess.rows.tobytes(),
                "p:0": _page_json(sess.pages[0]),
            },
        )
        pipe.expire(k, self.s.session_ttl_s)
        pipe.execute()

    def load(self, session_hex: str, upto_page: int) -> FeedSession | None:
        """The session with its pages 0..``upto_page`` that exist; None when it is gone."""
        fields = ["m", "c", *(f"p:{n}" for n in range(upto_page + 1))]
        raw: Any = self.r.hmget(key(self.s, session_hex), fields)
        if raw[0] is None or raw[1] is None:
            return None
        meta = json.loads(raw[0])
        sess = FeedSession(
            int(meta["u"]),
            session_hex,
            str(meta["v"]),
            float(meta["t"]),
            np.frombuffer(raw[1], dtype=ROW).copy(),
        )
        for page in raw[2:]:
            if page is None:
                break
            sess.pages.append(_page_from(page))
        return sess

    def put_page(self, sess: FeedSession, n: int, page: Sequence[PageItem]) -> list[PageItem]:
        """Store page ``n`` unless another request did first; the page that is stored."""
        k = key(self.s, sess.session_hex)
        pipe = self.r.pipeline(transaction=False)
        pipe.hsetnx(k, f"p:{n}", _page_json(page))  # type: ignore[arg-type]
        pipe.hget(k, f"p:{n}")
        pipe.expire(k, self.s.session_ttl_s)
        _, stored, _ = pipe.execute()
        return _page_from(stored) if stored is not None else list(page)

    def put_rows(self, sess: FeedSession) -> None:
        """Rows after more of them were heavy-scored (the same values whoever writes them)."""
        self.r.hset(key(self.s, sess.session_hex), "c", sess.rows.tobytes())  # type: ignore[arg-type]


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
