"""The feature reader's near cache of post/author/topic rows (``features.online._NearCache``)."""

from __future__ import annotations

import numpy as np

from features.online import _NearCache


def test_fresh_rows_are_filled_and_the_rest_reported_missing() -> None:
    c = _NearCache(n_fields=2, max_rows=100)
    c.store([10, 20], np.array([[1.0, 2.0], [3.0, 4.0]]), stamp=5.0)
    block = np.full((3, 2), np.nan)
    missing = c.lookup([20, 30, 10], fresh_after=4.0, block=block)
    assert missing == [1]
    assert block[0].tolist() == [3.0, 4.0] and block[2].tolist() == [1.0, 2.0]
    assert np.isnan(block[1]).all()


def test_stale_rows_are_missing_and_a_new_read_replaces_them() -> None:
    c = _NearCache(n_fields=1, max_rows=100)
    c.store([7], np.array([[1.0]]), stamp=1.0)
    block = np.zeros((1, 1))
    assert c.lookup([7], fresh_after=2.0, block=block) == [0]
    c.store([7], np.array([[9.0]]), stamp=3.0)
    assert c.lookup([7], fresh_after=2.0, block=block) == [] and block[0, 0] == 9.0


def test_it_grows_past_its_first_arrays_and_starts_over_past_its_bound() -> None:
    c = _NearCache(n_fields=1, max_rows=3000)
    ids = list(range(2500))
    c.store(ids, np.arange(2500, dtype=float)[:, None], stamp=1.0)
    block = np.zeros((2500, 1))
    assert c.lookup(ids, fresh_after=0.0, block=block) == []
    assert (block[:, 0] == np.arange(2500)).all()
    c.store([5000 + i for i in range(1000)], np.ones((1000, 1)), stamp=1.0)  # past 3000: cleared
    assert len(c.slot) == 1000
    assert c.lookup([0], fresh_after=0.0, block=np.zeros((1, 1))) == [0]
