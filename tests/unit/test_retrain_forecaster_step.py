"""The retrain's forecaster step on a lake with enough history, and its honest skip without.

No services: the step reads the lake's parquet and writes into the run folder.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core import constants as C
from core.settings import Settings
from pipelines.retrain import Context, RetrainOptions, Run, step_forecaster
from simulator.traffic import TrafficConfig, generate
from training.forecast import Forecaster


def _lake(tmp_path, weeks: int) -> Settings:
    """A lake whose impressions carry ``weeks`` of hourly request counts (one row a request)."""
    s = Settings(data_dir=tmp_path, home=tmp_path)
    traffic = generate(TrafficConfig(weeks=weeks, requests_per_hour=40, seed=3))
    stamps = np.repeat(traffic.index.to_numpy(), traffic.requests)
    world = s.world_dir
    world.mkdir(parents=True)
    pd.DataFrame(
        {C.REQUEST_ID: np.arange(len(stamps), dtype=np.int64), C.EVENT_TS: stamps}
    ).to_parquet(world / "impressions.parquet")
    pd.DataFrame({C.EVENT_TS: stamps[::10]}).to_parquet(world / "interactions.parquet")
    pd.DataFrame(
        {"created_at": stamps[::20], "media_bytes": np.full(len(stamps[::20]), 1000)}
    ).to_parquet(world / "posts.parquet")
    return s


def test_the_forecaster_is_refitted_when_the_lake_holds_enough_history(tmp_path):
    s = _lake(tmp_path, weeks=5)
    ctx = Context(s, RetrainOptions(), Run.new(s))
    out = step_forecaster(ctx)
    assert out.fitted and out.hours == 5 * 168
    model = Forecaster.load(ctx.path("forecaster"))
    history = pd.read_parquet(ctx.path("forecast_history.parquet"))
    assert list(history.columns) == ["ds", "y"] and len(history) == 5 * 168
    pred = model.predict(
        history["y"].to_numpy(np.float64), pd.DatetimeIndex(history["ds"]), len(history) - 1
    )
    assert pred.shape == (168, len(model.params.quantiles))
    # The median forecast is of the size of the traffic it learned (40 requests an hour).
    assert 10 < float(pred[0.5].mean()) < 160


def test_the_forecaster_step_says_why_it_skips_a_short_lake(tmp_path):
    s = _lake(tmp_path, weeks=2)
    ctx = Context(s, RetrainOptions(), Run.new(s))
    out = step_forecaster(ctx)
    # What state.json records: the reason, and no hours.
    assert out.to_json() == {
        "fitted": False,
        "reason": f"{2 * 168} hours of request history; the forecaster needs {336 + 60 + 168}",
    }
    assert not ctx.path("forecaster").exists()
