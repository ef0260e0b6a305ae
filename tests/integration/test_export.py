"""Held-back days served as live traffic, exported from Cassandra and committed to the lake.

The round trip must give back exactly what the simulator held back: the same impressions with
the same labels, dwell and propensities, and the lake must grow by those rows once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core import constants as C
from core.db import connect
from core.settings import Settings
from pipelines.export import KEYS, commit_export, export_log, lake_watermark
from pipelines.steps import NoFutureError, advance_world, generate_world
from simulator.config import WorldConfig
from simulator.writer import FUTURE_DIR, SERVED_LOG

pytestmark = pytest.mark.integration


@pytest.fixture
def own(settings: Settings, tmp_path: Path):
    """A keyspace and lake of this test's own: the session's world is never touched."""
    s = settings.model_copy(
        update={
            "cassandra_keyspace": f"{settings.cassandra_keyspace}_export",
            "data_dir": tmp_path / "data",
            "feast_project": f"{settings.feast_project}_export",
        }
    )
    yield s
    cluster, session = connect(s, keyspace=None)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {s.cassandra_keyspace}", timeout=60)
    finally:
        cluster.shutdown()


def _lake(s: Settings) -> dict[str, pd.DataFrame]:
    return {n: pd.read_parquet(s.world_dir / f"{n}.parquet") for n in SERVED_LOG}


def _rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` in a canonical row order, for comparing tables regardless of write order."""
    return frame.sort_values(KEYS[name]).reset_index(drop=True)


@pytest.mark.slow
def test_held_back_days_come_back_through_cassandra_into_the_lake_once(own: Settings, tmp_path):
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    cutoff = end - timedelta(days=1)
    world, summary = generate_world(
        own, WorldConfig(users=150, days=4, seed=7, end=end), hold_back_days=1
    )
    before = _lake(own)
    future = {n: pd.read_parquet(own.world_dir / FUTURE_DIR / f"{n}.parquet") for n in SERVED_LOG}
    assert lake_watermark(own.world_dir) == cutoff
    assert (
        before["impressions"][C.EVENT_TS].max() <= cutoff < future["impressions"][C.EVENT_TS].min()
    )
    assert len(future["impressions"]) > 500 and future["interactions"].shape[0] > 20
    assert len(before["impressions"]) + len(future["impressions"]) == len(world.impressions)
    assert summary.cassandra["interactions"] == len(before["interactions"])

    held = own.world_dir / FUTURE_DIR
    kept = {f.name: f.read_bytes() for f in held.iterdir()}
    written = advance_world(own, 1.0)
    # A crash after the writes, before the future files were cut: the re-run writes the same
    # rows again (upserts), and the export below still finds each once.
    for name, data in kept.items():
        (held / name).write_bytes(data)
    assert advance_world(own, 1.0) == written
    assert written["impressions"] == written["dwell"] == len(future["impressions"])
    assert written["interactions"] == len(future["interactions"])
    assert written["future_impressions"] == 0
    with pytest.raises(NoFutureError, match="no future left"):
        advance_world(own, 1.0)

    export = export_log(own, tmp_path / "export1", upto=end + timedelta(hours=1))
    assert (export.window_start, export.window_end) == (cutoff, end + timedelta(hours=1))
    got = {n: pd.read_parquet(export.out_dir / f"{n}.parquet") for n in SERVED_LOG}
    # Same rows, labels, dwell and propensities as the simulator held back, in the lake's dtypes.
    pd.testing.assert_frame_equal(
        _rows(got["impressions"], "impressions"),
        _rows(future["impressions"].drop(columns="explored"), "impressions"),
    )
    for name in SERVED_LOG:
        assert got[name].dtypes.to_dict() == before[name].dtypes.to_dict(), name
    pd.testing.assert_frame_equal(
        _rows(got["interactions"], "interactions"), _rows(future["interactions"], "interactions")
    )
    pd.testing.assert_frame_equal(
        _rows(got["candidates"], "candidates"), _rows(future["candidates"], "candidates")
    )
    # A page that began before the cutoff is exported again (its later items): the lake has it.
    fresh = got["requests"][got["requests"][C.REQUEST_ID].isin(future["requests"][C.REQUEST_ID])]
    pd.testing.assert_frame_equal(_rows(fresh, "requests"), _rows(future["requests"], "requests"))
    assert (
        got["requests"][C.REQUEST_ID]
        .isin(pd.concat([before["requests"], future["requests"]])[C.REQUEST_ID])
        .all()
    )

    added = commit_export(own, export.out_dir)
    assert added == {n: len(future[n]) for n in KEYS}
    after = _lake(own)
    for name in SERVED_LOG:
        whole = pd.concat([before[name], future[name]], ignore_index=True)
        pd.testing.assert_frame_equal(
            _rows(after[name], name), _rows(whole[list(before[name].columns)], name)
        )
    pd.testing.assert_frame_equal(
        _rows(after["impressions"], "impressions"), _rows(world.impressions, "impressions")
    )
    assert lake_watermark(own.world_dir) == end + timedelta(hours=1)
    manifest = json.loads((own.world_dir / "manifest.json").read_text())
    assert manifest["rows"]["impressions"] == len(world.impressions)

    # Committing the same export again changes nothing.
    assert commit_export(own, export.out_dir) == {n: 0 for n in KEYS}
    again = _lake(own)
    for name in SERVED_LOG:
        pd.testing.assert_frame_equal(again[name], after[name])
    # A crash after the tables, before the manifest: the watermark is still the old one, so
    # the next run exports the same window again, and its commit adds nothing twice.
    (own.world_dir / "manifest.json").write_text(
        json.dumps({**manifest, "log_watermark": cutoff.isoformat()})
    )
    redo = export_log(own, tmp_path / "redo", upto=end + timedelta(hours=1))
    assert redo.window_start == cutoff and redo.rows["impressions"] == len(future["impressions"])
    assert commit_export(own, redo.out_dir) == {n: 0 for n in KEYS}
    assert lake_watermark(own.world_dir) == end + timedelta(hours=1)
    for name, frame in _lake(own).items():
        pd.testing.assert_frame_equal(frame, after[name])

    # Nothing new since: the next window is empty.
    second = export_log(own, tmp_path / "export2", upto=end + timedelta(hours=2))
    assert second.window_start == end + timedelta(hours=1)
    assert second.rows["impressions"] == second.rows["interactions"] == 0
    assert commit_export(own, second.out_dir) == {n: 0 for n in KEYS}
