"""The prefetch planner: engagement predictions in, warm actions out. Pure: no I/O.

For a served page the service knows the order of the items and, per item, how likely the user
is to get there and what they will load when they do:

- **where the user will be**: the session forecast is a continuation rate ``c`` (learned from
  the user's earlier sessions): from position ``k`` the user reaches ``k + j`` with probability
  ``c ** j``. The first screen (``first_screen`` items) is loaded by the client with the page,
  so warming it would be late.
- **what they will load there** (the variant): a photo's ``full`` rendition is what the feed
  shows; a video shows its ``thumb`` first and streams its ``full`` object only if the user
  stays for autoplay, with probability ``p_autoplay`` (from the ranker's E[dwell] in serving,
  or the user's history). Objects above ``max_object_bytes`` (video streams, mostly) are not
  warmed: a byte budget buys far more hits spent on images.

The plan rolls with the session: when the page is served the planner warms the positions up to
``lookahead`` ahead of the first one; each impression at position ``k`` (the client reports it)
warms position ``k + lookahead``.

An object is fetched into the edge when its probability of use clears ``threshold``, so every
fetched object is used with at least that probability (the precision). Objects likely enough
to be used (``refresh_threshold``) but too big or too uncertain to fetch are *refreshed*: a HEAD
at the edge's refresh URL marks them recently used if they are cached and fetches nothing if
they are not (no origin bytes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from media import objects as media


@dataclass(frozen=True)
class PlanConfig:
    threshold: float = 0.85  # minimum probability of use of a fetched object
    refresh_threshold: float = 0.3  # minimum probability of use of a refreshed object
    first_screen: int = 2  # positions the client requests with the page itself
    lookahead: int = 2  # how far ahead of the user's position objects are warmed
    max_object_bytes: int = 1_000_000  # bigger objects (video streams) are left to demand

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.refresh_threshold <= self.threshold:
            raise ValueError("refresh_threshold must be in (0, threshold]")
        if self.first_screen < 0 or self.lookahead < 1:
            raise ValueError("first_screen must be ≥ 0 and lookahead ≥ 1")


@dataclass(frozen=True)
class WarmAction:
    """Warm one media object at the edge: fetch it (GET), or refresh it if cached (HEAD)."""

    post_id: int
    variant: str
    bytes: int
    p_use: float
    position: int
    fetch: bool = True
    stored_path: str | None = None  # a stored rendition's /media/r/... path (real media)

    @property
    def path(self) -> str:
        if self.stored_path is not None:
            return self.stored_path if self.fetch else f"/refresh{self.stored_path}"
        if self.fetch:
            return media.path(self.post_id, self.variant)
        return media.refresh_path(self.post_id, self.variant)


def p_autoplay_from_dwell(e_dwell_s: np.ndarray | float) -> np.ndarray:
    """P(dwell ≥ autoplay delay) for an exponential dwell with the predicted mean."""
    e = np.maximum(np.asarray(e_dwell_s, dtype=np.float64), 1e-6)
    return np.exp(-media.AUTOPLAY_S / e)


def steps(cfg: PlanConfig, at: int | None, length: int) -> list[tuple[int, int]]:
    """(position, steps ahead) pairs to warm when the user is at ``at`` (None: page served)."""
    if at is None:
        return [(j, j) for j in range(cfg.first_screen, min(cfg.lookahead + 1, length))]
    j = at + cfg.lookahead
    return [(j, cfg.lookahead)] if cfg.first_screen <= j < length else []


def objects(
    post_id: int,
    is_video: bool,
    full_bytes: int,
    p_view: float,
    p_autoplay: float,
    cfg: PlanConfig,
    stored_bytes: int | None = None,
) -> list[tuple[str, int, float, bool]]:
    """(variant, bytes, p_use, fetch) of one item's objects worth fetching or refreshing;
    ``stored_bytes``: a photo's stored rendition (its real size) instead of the simulated one."""
    out = []
    cands = [("thumb", p_view), ("full", p_view * p_autoplay)] if is_video else [("full", p_view)]
    for variant, p in cands:
        if stored_bytes is not None and not is_video:
            size = stored_bytes
        else:
            size = media.variant_bytes(post_id, full_bytes, variant)
        fetch = p >= cfg.threshold and size <= cfg.max_object_bytes
        if fetch or p >= cfg.refresh_threshold:
            out.append((variant, size, p, fetch))
    return out


def plan(
    post_ids: list[int],
    is_video: list[bool],
    full_bytes: list[int],
    p_continue: float,
    p_autoplay: list[float] | float,
    *,
    at: int | None = None,
    budget_bytes: int | None = None,
    cfg: PlanConfig | None = None,
    stored: Mapping[int, tuple[str, int]] | None = None,
) -> list[WarmAction]:
    """What to warm for one page: when it is served (``at=None``) or at an impression ``at``.
    ``stored``: post → (path, bytes) of the stored rendition a client draws first, for posts
    with real media (uploads, the demo's photos); the others are the simulated objects."""
    stored = stored or {}
    cfg = cfg or PlanConfig()
    n = len(post_ids)
    if not (n == len(is_video) == len(full_bytes)):
        raise ValueError("post_ids, is_video and full_bytes must have the same length")
    if math.isnan(p_continue) or not 0.0 <= p_continue <= 1.0:
        raise ValueError(f"p_continue must be in [0, 1], got {p_continue}")
    pa = np.broadcast_to(np.asarray(p_autoplay, dtype=np.float64), (n,))
    out: list[WarmAction] = []
    spent = 0
    for k, ahead in steps(cfg, at, n):
        post = int(post_ids[k])
        path, real = stored.get(post, (None, None))
        for variant, size, p, fetch in objects(
            post,
            bool(is_video[k]),
            int(full_bytes[k]),
            p_continue**ahead,
            float(pa[k]),
            cfg,
            real,
        ):
            if fetch:
                if budget_bytes is not None and spent + size > budget_bytes:
                    continue
                spent += size
            out.append(WarmAction(post, variant, size, float(p), k, fetch, path))
    return out


def plan_bulk(cfg: PlanConfig, t: Any) -> tuple[np.ndarray, ...]:
    """:func:`plan` for every page served and every impression of a trace, vectorized.

    ``t`` has the arrays of :class:`simulator.trace.Trace`: sessions (``s_first``, ``s_len``,
    ``s_start_s``, ``s_p_continue``, ``s_p_autoplay``), impressions (``v_session``, ``v_pos``,
    ``v_time_s``) and page items (``page_post``, ``page_video``, ``page_full_bytes``,
    ``page_thumb_bytes``).

    Returns (time, object id, bytes, kind) of each warm action, kind 1 = fetch, 2 = refresh
    (no budget: the cache replay spends it). ``tests/unit/test_planner.py`` checks it against
    :func:`plan` page by page.
    """
    # When served: positions first_screen..lookahead, j steps ahead of position 0.
    ahead = np.arange(cfg.first_screen, cfg.lookahead + 1)
    sess = np.repeat(np.arange(len(t.s_first)), len(ahead))
    j = np.tile(ahead, len(t.s_first))
    ok = j < t.s_len[sess]
    sess, j = sess[ok], j[ok]
    t_serve, steps_serve = t.s_start_s[sess], j
    # At each impression k: position k + lookahead.
    jj = t.v_pos + cfg.lookahead
    ok = (jj >= cfg.first_screen) & (jj < t.s_len[t.v_session])
    sess = np.concatenate([sess, t.v_session[ok]])
    pos = np.concatenate([j, jj[ok]])
    when = np.concatenate([t_serve, t.v_time_s[ok]])
    n_ahead = np.concatenate([steps_serve, np.full(int(ok.sum()), cfg.lookahead)])

    item = t.s_first[sess] + pos
    post, vid = t.page_post[item], t.page_video[item]
    p_view = t.s_p_continue[sess] ** n_ahead
    # photo → full; video → thumb, and full with p_view × p_autoplay
    variants = (
        (~vid, p_view, t.page_full_bytes[item], 1),
        (vid, p_view, t.page_thumb_bytes[item], 0),
        (vid, p_view * t.s_p_autoplay[sess], t.page_full_bytes[item], 1),
    )
    t_l, o_l, z_l, k_l = [], [], [], []
    for mask, p, size, full in variants:
        fetch = mask & (p >= cfg.threshold) & (size <= cfg.max_object_bytes)
        keep = fetch | (mask & (p >= cfg.refresh_threshold))
        t_l.append(when[keep])
        o_l.append(post[keep] * 2 + full)
        z_l.append(size[keep])
        k_l.append(np.where(fetch[keep], 1, 2))
    ts, o, z, k = (np.concatenate(x) for x in (t_l, o_l, z_l, k_l))
    order = np.argsort(ts, kind="stable")
    return ts[order], o[order].astype(np.int64), z[order].astype(np.int64), k[order].astype(np.int8)
