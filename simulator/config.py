"""Every parameter of the synthetic world, typed, with its seed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


def default_end() -> datetime:
    """The world ends at the start of the current UTC hour, so served feeds look fresh."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


class WorldConfig(BaseModel):
    """Shape of the world. Same config (``end`` included) and seed → the same world.

    The hidden parameters (tastes, quality, affinity, the true engagement model) are drawn from
    these and kept for judging only; features and models never read them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(2000, ge=20, le=1_000_000, description="Number of users.")
    days: int = Field(14, ge=2, le=90, description="Simulated days of posts and sessions.")
    seed: int = Field(0, ge=0, description="Seed of every random draw.")
    end: datetime = Field(default_factory=default_end, description="End of the simulated period.")
    topics: int = Field(8, ge=2, le=64, description="Number of content topics.")
    taste_concentration: float = Field(
        0.3, gt=0, description="Dirichlet concentration of user tastes (smaller = pickier users)."
    )
    author_share: float = Field(0.3, gt=0, le=1, description="Share of users who post.")
    mean_follows: float = Field(30, ge=1, description="Mean accounts a user follows.")
    popularity_shape: float = Field(
        1.1, gt=0, description="Pareto shape of author popularity (smaller = heavier tail)."
    )
    posts_per_author_day: float = Field(0.6, gt=0, description="Mean posts per author per day.")
    video_share: float = Field(0.2, ge=0, le=1, description="Share of posts that are videos.")
    sessions_per_user_day: float = Field(3.0, gt=0, description="Mean app opens per user-day.")
    weekly_amplitude: float = Field(
        0.2, ge=0, lt=1, description="Weekend lift of sessions (weekly seasonality)."
    )
    daily_amplitude: float = Field(
        0.8, ge=0, lt=1, description="Evening peak of sessions (daily seasonality)."
    )
    items_per_session: int = Field(12, ge=1, le=100, description="Items a session scrolls.")
    candidate_window_h: float = Field(48, gt=0, description="How far back a timeline reaches.")
    explore_per_request: int = Field(
        5, ge=0, le=100, description="Out-of-network candidates (recent posts of big accounts)."
    )
    explore_share: float = Field(
        0.3, ge=0, le=1, description="Share of logged pages shown in uniformly random order."
    )
    base_logit: float = Field(-2.6, description="Intercept of the true like model.")
    taste_weight: float = Field(3.0, ge=0, description="Logit weight of the user's topic taste.")
    quality_weight: float = Field(0.7, ge=0, description="Logit weight of post quality.")
    affinity_weight: float = Field(0.8, ge=0, description="Logit weight of user×author affinity.")
    affinity_structure: float = Field(
        0.8, ge=0, le=1, description="Share of affinity from shared circles (vs pair noise)."
    )
    in_network_bonus: float = Field(0.4, description="Logit bonus of followed authors.")
    recency_per_h: float = Field(0.03, ge=0, description="Logit lost per hour of post age.")
    position_bias: float = Field(
        0.5, ge=0, description="Examination ∝ 1 / (1 + position) ** position_bias."
    )
    base_dwell_s: float = Field(3.0, gt=0, description="Dwell of an examined, unliked photo.")

    @model_validator(mode="after")
    def _aware_end(self) -> WorldConfig:
        if self.end.tzinfo is None:
            object.__setattr__(self, "end", self.end.replace(tzinfo=UTC))
        return self

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)

    @classmethod
    def from_file(cls, path: Path, **overrides: object) -> WorldConfig:
        """A config from a JSON or YAML file, with command-line overrides on top."""
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of WorldConfig fields")
        data = data.get("config", data)  # a world manifest works too
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})
