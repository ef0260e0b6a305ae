from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from serving.candidates import Candidate
from serving.ranking import assemble, model_inputs
from training.evaluate import mean_ndcg, ndcg_at_k

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)


def cands(authors):
    return [
        Candidate(i + 1, a, NOW - timedelta(hours=i), "timeline") for i, a in enumerate(authors)
    ]


def test_page_is_best_first_and_limited():
    page = assemble(cands([1, 2, 3, 4]), np.array([0.1, 0.9, 0.5, 0.7]), limit=3)
    assert [i.post_id for i in page] == [2, 4, 3]


def test_at_most_two_posts_per_author_unless_backfill_is_needed():
    c = cands([7, 7, 7, 8])
    page = assemble(c, np.array([0.9, 0.8, 0.7, 0.1]), limit=3)
    assert [i.post_id for i in page] == [1, 2, 4]
    # Only one other author: the third post of author 7 backfills the page.
    page = assemble(c, np.array([0.9, 0.8, 0.7, 0.1]), limit=4)
    assert [i.post_id for i in page] == [1, 2, 4, 3]


def test_model_inputs_follow_the_booster_order_and_mark_unserved_features_unknown():
    c = cands([1, 2])
    feats = pd.DataFrame({"post_likes": [3.0, 4.0]})
    x = model_inputs(c, feats, ["post_age_h", "post_likes", "author_followers"], NOW)
    assert list(x.columns) == ["post_age_h", "post_likes", "author_followers"]
    assert x["post_age_h"].tolist() == pytest.approx([0.0, 1.0])
    assert x["author_followers"].isna().all()


def test_ndcg_is_one_for_the_ideal_order_and_lower_otherwise():
    gains = np.array([3.0, 2.0, 0.0, 1.0])
    assert ndcg_at_k(gains, gains) == pytest.approx(1.0)
    assert ndcg_at_k(gains, -gains) < 0.7
    assert ndcg_at_k(np.zeros(3), np.arange(3.0)) == 0.0


def test_mean_ndcg_groups_by_request():
    df = pd.DataFrame(
        {
            "request_id": [1, 1, 2, 2],
            "oracle_utility": [1.0, 0.0, 0.0, 1.0],
            "s": [1.0, 0.0, 1.0, 0.0],
        }
    )
    assert mean_ndcg(df, "s") == pytest.approx((1.0 + 1 / np.log2(3)) / 2)
