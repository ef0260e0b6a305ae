"""Traffic series for the forecaster and the capacity planner: requests, uploads, bytes, storage.

Hourly counts drawn around a *true rate* with the world's daily (evening peak) and weekly
(weekend) seasonality (:data:`simulator.world.WEEKDAY_LIFT`), negative-binomial noise, and one of
four variants: ``stationary``, ``growth`` (steady compound growth), ``event`` (one-off spikes no
calendar predicts) and ``shift`` (a step change in level and evening peak). The true rate is kept
beside the counts: no forecaster can do better than knowing it, so it is the backtest's floor.

:func:`from_logs` aggregates the same series from what the service logs (impressions,
interactions, posts), so a forecaster can be fitted on a real deployment's history too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from core import constants as C
from simulator.world import WEEKDAY_LIFT

Variant = Literal["stationary", "growth", "event", "shift"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)
HOURS_PER_WEEK = 168


class TrafficConfig(BaseModel):
    """Shape of the traffic. Same config and seed → the same series."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Variant = Field("stationary", description="Which kind of history.")
    weeks: int = Field(26, ge=2, le=260, description="Length of the series in weeks.")
    seed: int = Field(0, ge=0, description="Seed of every random draw.")
    start: datetime = Field(
        datetime(2025, 1, 6, tzinfo=UTC), description="First hour (a Monday 00:00 UTC by default)."
    )
    requests_per_hour: float = Field(2000, gt=0, description="Mean feed requests per hour.")
    uploads_per_request: float = Field(0.05, gt=0, description="Uploads per feed request.")
    daily_amplitude: float = Field(0.8, ge=0, lt=1, description="Evening peak (as the world).")
    weekly_amplitude: float = Field(0.2, ge=0, lt=1, description="Weekend lift (as the world).")
    upload_daily_amplitude: float = Field(0.5, ge=0, lt=1, description="Daily cycle of uploads.")
    dispersion: float = Field(
        1000, gt=0, description="Negative-binomial size k: variance = rate + rate² / k."
    )
    growth_per_week: float = Field(0.03, ge=-0.5, le=1, description="Growth (variant growth).")
    events: int = Field(10, ge=0, description="Number of one-off spikes (variant event).")
    event_lift: tuple[float, float] = Field(
        (1.0, 3.0), description="Range of a spike's extra load, as a share of the rate."
    )
    event_hours: tuple[int, int] = Field((2, 10), description="Range of a spike's length (h).")
    shift_at: float = Field(
        0.45, gt=0, lt=1, description="Where the regime shift happens (share of the series)."
    )
    shift_level: float = Field(1.5, gt=0, description="Level after the shift (variant shift).")
    shift_peak_hours: float = Field(
        2.0, description="The evening peak moves this many hours later after the shift."
    )
    video_share: float = Field(0.2, ge=0, le=1, description="Share of uploads that are videos.")
    storage_start_bytes: float = Field(2e12, ge=0, description="Bytes stored at the start.")


@dataclass(frozen=True)
class Traffic:
    """Hourly series of one history; ``*_rate`` are the true means the counts are drawn from."""

    config: TrafficConfig
    index: pd.DatetimeIndex  # hourly, UTC
    request_rate: np.ndarray
    requests: np.ndarray
    upload_rate: np.ndarray
    uploads: np.ndarray
    upload_bytes: np.ndarray
    storage_bytes: np.ndarray  # bytes stored at the end of each hour
    # The request rate without the one-off spikes (variant ``event``; the rate itself
    # otherwise): what a forecaster could know at best, since no calendar predicts a spike.
    forecastable_rate: np.ndarray

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "requests": self.requests,
                "request_rate": self.request_rate,
                "uploads": self.uploads,
                "upload_rate": self.upload_rate,
                "upload_bytes": self.upload_bytes,
                "storage_bytes": self.storage_bytes,
            },
            index=self.index,
        )


def seasonal_profile(
    index: pd.DatetimeIndex, daily_amplitude: float, weekly_amplitude: float, peak_shift_h=0.0
) -> np.ndarray:
    """The world's session profile (mean 1 over a week): evening peak × weekend lift."""
    hod = index.hour.to_numpy() + index.minute.to_numpy() / 60.0 - peak_shift_h
    dow = index.dayofweek.to_numpy()
    daily = 1.0 + daily_amplitude * np.sin((hod - 14) / 24 * 2 * np.pi)
    weekly = 1.0 + weekly_amplitude * WEEKDAY_LIFT[dow]
    return daily * weekly / np.mean(weekly_amplitude * WEEKDAY_LIFT + 1.0)


def _level(config: TrafficConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplier of the rate per hour for the variant (1 everywhere for ``stationary``)."""
    t = np.arange(n, dtype=np.float64)
    level = np.ones(n)
    if config.variant == "growth":
        level = (1.0 + config.growth_per_week) ** (t / HOURS_PER_WEEK)
    elif config.variant == "event":
        lo, hi = config.event_hours
        for _ in range(config.events):
            at = int(rng.integers(0, n))
            length = int(rng.integers(lo, hi + 1))
            lift = rng.uniform(*config.event_lift)
            # A ramp up and a decay: a spike, not a rectangle.
            shape = np.sin(np.linspace(0, np.pi, length + 2)[1:-1])
            end = min(n, at + length)
            level[at:end] += lift * shape[: end - at]
    elif config.variant == "shift":
        level[int(config.shift_at * n) :] = config.shift_level
    return level


def _counts(rate: np.ndarray, dispersion: float, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial counts with mean ``rate`` and variance ``rate + rate² / dispersion``."""
    return rng.negative_binomial(dispersion, dispersion / (dispersion + rate)).astype(np.int64)


def generate(config: TrafficConfig) -> Traffic:
    """One seeded history; each component draws from its own stream (adding one moves no other)."""
    level_rng, req_rng, up_rng, bytes_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(4)
    )
    n = config.weeks * HOURS_PER_WEEK
    index = pd.date_range(pd.Timestamp(config.start), periods=n, freq="h")
    level = _level(config, n, level_rng)
    profile = seasonal_profile(index, config.daily_amplitude, config.weekly_amplitude)
    if config.variant == "shift":
        after = int(config.shift_at * n)
        moved = seasonal_profile(
            index, config.daily_amplitude, config.weekly_amplitude, config.shift_peak_hours
        )
        profile = np.concatenate([profile[:after], moved[after:]])
    request_rate = config.requests_per_hour * level * profile
    upload_profile = seasonal_profile(index, config.upload_daily_amplitude, config.weekly_amplitude)
    upload_rate = config.requests_per_hour * config.uploads_per_request * level * upload_profile
    requests = _counts(request_rate, config.dispersion, req_rng)
    uploads = _counts(upload_rate, config.dispersion, up_rng)
    upload_bytes = _upload_bytes(uploads, config.video_share, bytes_rng)
    storage = config.storage_start_bytes + np.cumsum(upload_bytes)
    calm = np.ones(n) if config.variant == "event" else level
    return Traffic(
        config,
        index,
        request_rate,
        requests,
        upload_rate,
        uploads,
        upload_bytes,
        storage,
        forecastable_rate=config.requests_per_hour * calm * profile,
    )


def _upload_bytes(uploads: np.ndarray, video_share: float, rng: np.random.Generator) -> np.ndarray:
    """Bytes uploaded per hour: photos and videos sized as the world's media."""
    total = int(uploads.sum())
    video = rng.random(total) < video_share
    size = np.where(
        video, rng.lognormal(np.log(4e6), 0.6, total), rng.lognormal(np.log(2.5e5), 0.5, total)
    )
    hour = np.repeat(np.arange(len(uploads)), uploads)
    return np.bincount(hour, weights=size, minlength=len(uploads)).astype(np.int64)


def per_minute(
    rate: np.ndarray, index: pd.DatetimeIndex, dispersion: float, seed: int
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Per-minute true rate (linear between hour midpoints) and counts drawn around it."""
    minutes = pd.date_range(index[0], periods=len(index) * 60, freq="min")
    t = np.arange(len(minutes)) / 60.0
    minute_rate = np.interp(t, np.arange(len(index)) + 0.5, rate) / 60.0
    counts = _counts(minute_rate, dispersion, np.random.default_rng(seed))
    return minutes, minute_rate, counts


def from_lake(lake: Path) -> pd.DataFrame:
    """:func:`from_logs` over the lake's Parquet files (impressions, interactions, posts)."""
    return from_logs(
        pd.read_parquet(lake / "impressions.parquet", columns=[C.REQUEST_ID, C.EVENT_TS]),
        pd.read_parquet(lake / "interactions.parquet", columns=[C.EVENT_TS]),
        pd.read_parquet(lake / "posts.parquet", columns=["created_at", "media_bytes"]),
    )


def from_logs(
    impressions: pd.DataFrame,
    interactions: pd.DataFrame,
    posts: pd.DataFrame,
    *,
    freq: str = "h",
    storage_start_bytes: float = 0.0,
) -> pd.DataFrame:
    """The same series counted from what the service logs, one row per ``freq`` bin.

    Feed requests are distinct request ids among impressions (a page logs one impression per
    item); uploads are posts by ``created_at``. Empty bins are zeros, over the whole span.
    """
    req = impressions.drop_duplicates(C.REQUEST_ID)
    bins = {
        "requests": req[C.EVENT_TS],
        "impressions": impressions[C.EVENT_TS],
        "events": interactions[C.EVENT_TS],
        "uploads": posts["created_at"],
    }
    stamps = pd.concat([s for s in bins.values() if len(s)])
    if stamps.empty:
        raise ValueError("no timestamps in the logs")
    index = pd.date_range(stamps.min().floor(freq), stamps.max().floor(freq), freq=freq)
    out = pd.DataFrame(index=index)
    for name, ts in bins.items():
        out[name] = ts.dt.floor(freq).value_counts().reindex(index, fill_value=0).astype(np.int64)
    size = posts.groupby(posts["created_at"].dt.floor(freq))["media_bytes"].sum()
    out["upload_bytes"] = size.reindex(index, fill_value=0).astype(np.int64)
    out["storage_bytes"] = storage_start_bytes + out["upload_bytes"].cumsum()
    return out
