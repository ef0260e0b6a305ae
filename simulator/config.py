"""Every parameter of the synthetic world, typed, with its seed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator


def default_end() -> datetime:
    """The world ends at the start of the current UTC hour, so served feeds look fresh."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


class WorldConfig(BaseModel):
    """Shape of the world. Same config (``end`` included) and seed → the same world."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(2000, ge=20, le=1_000_000, description="Number of users.")
    days: int = Field(7, ge=2, le=90, description="Simulated days of posts and sessions.")
    seed: int = Field(0, ge=0, description="Seed of every random draw.")
    end: datetime = Field(default_factory=default_end, description="End of the simulated period.")
    topics: int = Field(8, ge=2, le=64, description="Number of content topics.")
    author_share: float = Field(0.3, gt=0, le=1, description="Share of users who post.")
    mean_follows: float = Field(30, ge=1, description="Mean accounts a user follows.")
    popularity_shape: float = Field(
        1.1, gt=0, description="Pareto shape of author popularity (smaller = heavier tail)."
    )
    posts_per_author_day: float = Field(0.6, gt=0, description="Mean posts per author per day.")
    sessions_per_user_day: float = Field(1.5, gt=0, description="Mean app opens per user-day.")
    items_per_session: int = Field(12, ge=1, le=100, description="Items a session scrolls.")
    candidate_window_h: float = Field(48, gt=0, description="How far back a timeline reaches.")
    base_logit: float = Field(-2.4, description="Intercept of the true like model.")

    @model_validator(mode="after")
    def _aware_end(self) -> WorldConfig:
        if self.end.tzinfo is None:
            object.__setattr__(self, "end", self.end.replace(tzinfo=UTC))
        return self

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)
