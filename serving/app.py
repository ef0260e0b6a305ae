"""The Ray Serve application: the whole deployment graph in one file.

``build_app(AppArgs(...))`` binds the FastAPI ingress deployment; ``feedcast serve`` runs it.
"""

# No `from __future__ import annotations`: FastAPI resolves these annotations at runtime, and
# Ray Serve's class ingress cannot resolve string forward references.

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import pandas as pd
from cassandra.query import BatchStatement, BatchType
from fastapi import FastAPI, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from core.db import connect, consistency
from core.settings import Settings
from core.statements import Statements
from core.time import day_bucket
from features.store import FEATURE_COLUMNS, online_features, open_store
from serving import candidates, ranking
from serving.model import load_alias
from serving.rules import RuleConfig, Scored, apply_rules

log = logging.getLogger("feedcast.serving")

api = FastAPI(
    title="feedcast",
    description="Ranked feed pages from engagement models served on Ray Serve.",
    version="1",
)


class FeedItem(BaseModel):
    post_id: int
    author_id: int
    score: float


class FeedPage(BaseModel):
    user_id: int
    items: list[FeedItem]
    model_version: str
    candidates: int = Field(description="Candidates scored for this page.")
    degraded: list[str] = Field(description="Steps that fell back to a degraded path.")
    request_id: str


class AppArgs(BaseModel):
    """Arguments of :func:`build_app`: the settings the replicas run with."""

    settings: dict[str, Any] = Field(default_factory=dict)
    num_replicas: int = Field(1, ge=1)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
@serve.ingress(api)
class FeedService:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = Settings(**settings)
        self.cluster, self.session = connect(self.settings)
        self.stmts = Statements(self.session, self.settings)
        self.store = open_store(self.settings)
        self.rankers = load_alias(self.settings)
        log.info("feed service ready with %s", self.rankers.label)

    @api.get("/healthz")
    def healthz(self) -> dict[str, str]:
        return {"status": "ok", "model_version": self.rankers.label}

    @api.get("/v1/feed/{user_id}", response_model=FeedPage)
    def feed(
        self,
        user_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="The reader.")],
        response: Response,
        limit: Annotated[
            int | None, Query(ge=1, le=100, description="Items on the page (default: settings).")
        ] = None,
    ) -> FeedPage:
        started = time.perf_counter()
        limit = limit or self.settings.feed_default_limit
        request_id = uuid.uuid4().hex
        s = self.settings
        if (
            self.session.execute(
                self.stmts.get_user, (user_id,), timeout=s.cassandra_request_timeout_s
            ).one()
            is None
        ):
            raise HTTPException(status_code=404, detail=f"unknown user_id {user_id}")
        now = datetime.now(UTC)
        cands, ctx = candidates.gather(
            self.session,
            self.stmts,
            user_id,
            now,
            days=s.timeline_days,
            pull_threshold=s.pull_follower_threshold,
            cap=s.feed_max_candidates,
            timeout_s=s.cassandra_request_timeout_s,
        )
        degraded: list[str] = []
        page = []
        if cands:
            try:
                feats = online_features(
                    self.store,
                    user_id,
                    [c.post_id for c in cands],
                    [c.author_id for c in cands],
                    [c.topic for c in cands],
                    now.timestamp(),
                )
            except Exception as exc:  # the online store is down: rank on unknowns, say so
                log.warning("features unavailable for %s: %s", request_id, exc)
                degraded.append("features")
                feats = pd.DataFrame({c: np.full(len(cands), np.nan) for c in FEATURE_COLUMNS})
            x = ranking.model_inputs(cands, feats, user_id)
            scored = ranking.score(
                self.rankers, x, ctx.followed, keep=s.light_keep, weights=s.blend_weights
            )
            page = apply_rules(
                scored,
                limit,
                seen=ctx.seen,
                blocked_authors=ctx.blocked,
                config=RuleConfig(
                    max_per_author=s.max_per_author,
                    max_out_of_network_share=s.max_out_of_network_share,
                ),
            )
        self._log_impressions(user_id, request_id, now, page)
        response.headers["X-Model-Version"] = self.rankers.label
        log.info(
            "feed user=%s request=%s candidates=%d ms=%.1f",
            user_id,
            request_id,
            len(cands),
            (time.perf_counter() - started) * 1000,
        )
        return FeedPage(
            user_id=user_id,
            model_version=self.rankers.label,
            candidates=len(cands),
            degraded=degraded,
            request_id=request_id,
            items=[FeedItem(post_id=i.post_id, author_id=i.author_id, score=i.score) for i in page],
        )

    def _log_impressions(
        self, user_id: int, request_id: str, now: datetime, page: list[Scored]
    ) -> None:
        """Write what was shown, off the response path (asynchronous, errors only logged).

        Every row of a page lands in the same (user, day) partition, so the page is one
        unlogged single-partition batch: one round trip, applied atomically. The page is
        deterministic given its inputs, so each item's propensity is 1.
        """
        if not page:
            return
        batch = BatchStatement(
            batch_type=BatchType.UNLOGGED,
            consistency_level=consistency(self.settings.cassandra_write_consistency),
        )
        day = day_bucket(now)
        for pos, item in enumerate(page):
            batch.add(
                self.stmts.insert_impression,
                (
                    user_id,
                    day,
                    now,
                    request_id,
                    pos,
                    item.post_id,
                    item.author_id,
                    self.rankers.label,
                    item.score,
                    1.0,
                ),
            )
        fut = self.session.execute_async(batch, timeout=self.settings.cassandra_request_timeout_s)
        fut.add_errback(lambda exc: log.warning("impression write failed: %s", exc))


def build_app(args: AppArgs) -> Application:
    """The feed application: one ingress deployment holding candidates, features and model."""
    # serve.deployment turns the class into a Deployment; mypy sees only the class.
    deployment: Any = FeedService
    return deployment.options(num_replicas=args.num_replicas).bind(args.settings)
