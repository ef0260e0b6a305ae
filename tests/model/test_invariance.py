"""Invariance: an author's name (their id) is no signal. Renamed, the same author gets the
same features and the same scores: the light ranker never sees ids; the heavy ranker keys an
embedding by them, so for it the rename is consistent (model vocabulary and request)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from core import constants as C
from features.store import FEATURE_COLUMNS
from pipelines.steps import features_apply
from tests.model import tiny as t
from training import light
from training.dataset import time_split, training_frame
from training.heavy import HeavyModel

pytestmark = pytest.mark.model

UNSEEN = 10**9  # no account of the tiny world has an id this large


def _author_mapping(tiny: t.Tiny) -> dict[int, int]:
    """Every author to a new id: far from the old ones and in another order (shuffled)."""
    posts = pd.read_parquet(tiny.settings.world_dir / "posts.parquet")
    authors = np.sort(posts[C.AUTHOR_ID].unique())
    new = 10**6 + np.random.default_rng(0).permutation(len(authors))
    return dict(zip(authors.tolist(), new.tolist(), strict=True))


def test_renaming_every_author_changes_no_feature_row_and_no_light_score(tiny, tmp_path):
    """The whole pipeline, renamed world in: feature tables, point-in-time rows, a light ranker
    trained again. Nothing may change but the ids."""
    mapping = _author_mapping(tiny)
    s = t.renamed_world(tiny.settings, tmp_path, mapping)
    features_apply(s)
    renamed = training_frame(s)

    key = [C.REQUEST_ID, C.POSITION]
    assert renamed[key].equals(tiny.frame[key])  # the same rows, in the same order
    assert renamed[C.AUTHOR_ID].equals(tiny.frame[C.AUTHOR_ID].map(mapping))
    pd.testing.assert_frame_equal(
        renamed[list(FEATURE_COLUMNS)], tiny.frame[list(FEATURE_COLUMNS)], check_exact=True
    )

    split = time_split(renamed, holdout_days=1.0)
    booster = light.train(split.train, t.LIGHT)
    np.testing.assert_array_equal(
        booster.predict(light.features_matrix(split.holdout, serving_like=True)),
        tiny.rankers.light.predict(light.features_matrix(tiny.holdout, serving_like=True)),
    )


def test_a_renamed_author_changes_no_light_score(tiny):
    for rows in t.busiest(tiny.holdout, 20):
        renamed = rows.assign(**{C.AUTHOR_ID: rows[C.AUTHOR_ID] + UNSEEN})
        np.testing.assert_array_equal(
            t.light_scores(tiny.rankers, renamed), t.light_scores(tiny.rankers, rows)
        )


def _renamed_heavy(heavy: HeavyModel, mapping: dict[int, int]) -> HeavyModel:
    """The same trained heavy ranker with every author renamed in its vocabulary: the id list is
    re-sorted, and the author-embedding rows move with their authors."""
    old = np.asarray(heavy.spec.authors)
    new = np.asarray([mapping[int(a)] for a in old])
    order = np.argsort(new)
    net = copy.deepcopy(heavy.net)
    with torch.no_grad():
        w = heavy.net.author.weight
        # row 0 is the unknown-author embedding; row i + 1 belongs to spec.authors[i]
        net.author.weight[1:] = w[1:][torch.from_numpy(order)]
    spec = dataclasses.replace(heavy.spec, authors=new[order].tolist())
    return HeavyModel(net=net, spec=spec)


def test_a_consistently_renamed_author_changes_no_served_score(tiny):
    """The heavy ranker learns an embedding per author (collaborative signal), so an author's id
    is a key into what was learned about them, never a number: renamed in the model's vocabulary
    and in the request alike, every served score stays the same."""
    mapping = _author_mapping(tiny)
    heavy = _renamed_heavy(tiny.rankers.heavy, mapping)
    renamed_rankers = dataclasses.replace(tiny.rankers, heavy=heavy)
    weights = tiny.settings.blend_weights
    for rows in t.busiest(tiny.holdout, 20):
        renamed = rows.assign(**{C.AUTHOR_ID: rows[C.AUTHOR_ID].map(mapping)})
        assert renamed[C.AUTHOR_ID].notna().all()
        np.testing.assert_allclose(
            t.served_scores(renamed_rankers, renamed, weights),
            t.served_scores(tiny.rankers, rows, weights),
            rtol=1e-6,
        )


def test_authors_the_rankers_never_saw_are_scored_alike_whatever_their_id(tiny):
    """What does hold for the heavy ranker: an id it never saw carries no information of its
    own (no hashing of raw ids into buckets, no id used as a number)."""
    weights = tiny.settings.blend_weights
    for rows in t.busiest(tiny.holdout, 20):
        first = rows.assign(**{C.AUTHOR_ID: rows[C.AUTHOR_ID] + UNSEEN})
        second = rows.assign(**{C.AUTHOR_ID: 7 * rows[C.AUTHOR_ID] + 3 * UNSEEN})
        np.testing.assert_array_equal(
            t.served_scores(tiny.rankers, second, weights),
            t.served_scores(tiny.rankers, first, weights),
        )
