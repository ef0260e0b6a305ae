import numpy as np
import pandas as pd
import pytest

from features.request import request_time_features
from training.evaluate import auc, ece, mean_ndcg, ndcg_at_k, snips_by_slot


def test_ndcg_is_one_for_the_ideal_order_and_lower_otherwise():
    gains = np.array([3.0, 2.0, 0.0, 1.0])
    assert ndcg_at_k(gains, gains) == pytest.approx(1.0)
    assert ndcg_at_k(gains, -gains) < 0.7
    assert ndcg_at_k(np.zeros(3), np.arange(3.0)) == 0.0


def test_mean_ndcg_groups_by_request():
    df = pd.DataFrame(
        {"request_id": [1, 1, 2, 2], "g": [1.0, 0.0, 0.0, 1.0], "s": [1.0, 0.0, 1.0, 0.0]}
    )
    assert mean_ndcg(df, "s", "g") == pytest.approx((1.0 + 1 / np.log2(3)) / 2)


def test_ece_is_small_for_calibrated_and_large_for_shifted_predictions():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.3, 200_000)
    y = rng.random(len(p)) < p
    assert ece(y, p) < 0.003
    assert ece(y, p * 1.5) > 0.05
    assert auc(y, p) > 0.6


def test_snips_recovers_a_policy_value_from_uniformly_logged_data():
    # Each request has 5 candidates with known rewards; one random item is logged at slot 0.
    rng = np.random.default_rng(1)
    n_req, m = 20_000, 5
    value = rng.uniform(0, 1, (n_req, m))
    logged_item = rng.integers(0, m, n_req)
    reward = (rng.random(n_req) < value[np.arange(n_req), logged_item]).astype(float)
    logged = pd.DataFrame(
        {
            "request_id": np.arange(n_req),
            "post_id": logged_item,
            "position": 0,
            "propensity": 1.0 / m,
            "r": reward,
        }
    )
    best = value.argmax(axis=1)  # the target policy puts the best item first
    target = pd.Series(
        0,
        index=pd.MultiIndex.from_arrays([np.arange(n_req), best], names=["request_id", "post_id"]),
    )
    est = snips_by_slot(logged, target, "r")[0]
    assert est == pytest.approx(value.max(axis=1).mean(), rel=0.05)


def test_request_features_are_age_hour_and_weekday():
    # 2026-01-05 was a Monday; a post made 90 minutes before 10:00 UTC.
    req = pd.Timestamp("2026-01-05 10:00", tz="UTC").timestamp()
    out = request_time_features(pd.Series([req]), pd.Series([req - 5400]))
    assert out.iloc[0].tolist() == [1.5, 10.0, 0.0]


def test_pbm_snips_recovers_a_page_value_under_position_bias():
    from training.evaluate import examination_curve, snips_pbm

    # 8 candidates per request, 4 shown in random order; examination halves per slot.
    rng = np.random.default_rng(2)
    n_req, m, k = 20_000, 8, 4
    exam = 0.5 ** np.arange(k)
    value = rng.uniform(0, 0.5, (n_req, m))
    rows = []
    for r in range(n_req):
        shown = rng.choice(m, size=k, replace=False)
        for j, i in enumerate(shown):
            rows.append((r, i, j, k / m, float(rng.random() < exam[j] * value[r, i])))
    logged = pd.DataFrame(rows, columns=["request_id", "post_id", "position", "p_shown", "r"])
    best = np.argsort(-value, axis=1)[:, :2]  # the target policy: the two best, best first
    target = pd.Series(
        np.tile([0, 1], n_req),
        index=pd.MultiIndex.from_arrays(
            [np.repeat(np.arange(n_req), 2), best.ravel()], names=["request_id", "post_id"]
        ),
    )
    e = examination_curve(logged, "r", pd.Series(True, index=logged.index))
    assert e.iloc[1] == pytest.approx(0.5, abs=0.05)
    est = snips_pbm(logged, target, "r", "p_shown", e)
    sorted_values = np.sort(value, axis=1)
    assert est[0] == pytest.approx(sorted_values[:, -1].mean(), rel=0.05)
    assert est[1] == pytest.approx(0.5 * sorted_values[:, -2].mean(), rel=0.07)


def test_mean_ndcg_equals_the_per_request_definition_ties_included():
    """The vectorised mean NDCG is the mean of ndcg_at_k per request, with ties broken by row
    order as the stable sort does, and requests of one item left out."""
    from core import constants as C

    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 400))
        f = pd.DataFrame(
            {
                C.REQUEST_ID: rng.integers(0, 40, n),
                "s": rng.integers(0, 4, n).astype(float),  # many ties
                "g": rng.integers(0, 3, n).astype(float),
            }
        )
        per_request = [
            ndcg_at_k(g["g"].to_numpy(), g["s"].to_numpy(), 10)
            for _, g in f.groupby(C.REQUEST_ID, sort=False)
            if len(g) > 1
        ]
        got = mean_ndcg(f, "s", "g", 10)
        if per_request:
            assert got == pytest.approx(float(np.mean(per_request)), abs=1e-12)
        else:
            assert np.isnan(got)
