"""Point-in-time joins over the Feast registry's own views, at training-set scale.

Same semantics as Feast's ``get_historical_features``: for every entity row and view, the
latest feature row whose timestamp is at or before the row's, within the view's TTL, ties
broken by the created timestamp; nothing found → null. The definitions (sources, join keys,
TTLs, on-demand transformations) are read from the registry, so there is one source of truth.

Why not Feast's file offline store itself: on this machine it needs ~17 GB and ~66 s for 200k
rows (dask), and it drops entity rows that have no feature row instead of returning nulls.
It stays the reference: ``engine="feast"`` and a parity test compare the two on the same rows.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from feast import FeatureStore

from core import constants as C

_ROW = "_row"
Engine = Literal["pandas", "feast"]


def historical_features(
    store: FeatureStore, entity_df: pd.DataFrame, service: str, engine: Engine = "pandas"
) -> pd.DataFrame:
    """``entity_df`` with every feature of ``service`` as of each row's ``event_timestamp``."""
    base = entity_df.reset_index(drop=True).copy()
    base[_ROW] = np.arange(len(base))
    base[C.EVENT_TS] = pd.to_datetime(base[C.EVENT_TS], utc=True)
    out = base
    on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
    odfvs = []
    for projection in store.get_feature_service(service).feature_view_projections:
        names = [f.name for f in projection.features]
        if projection.name in on_demand:  # computed after the batch views it reads
            odfvs.append((on_demand[projection.name], names))
            continue
        fv = store.get_feature_view(projection.name)
        source: Any = fv.batch_source  # a FileSource: every view of ours reads parquet
        if engine == "feast":
            got = _feast_view(store, base, projection.name, names)
        else:
            got = _asof_view(
                base, source.path, fv.join_keys, names, fv.ttl, source.created_timestamp_column
            )
        out = out.merge(got, on=_ROW, how="left")
    for odfv, names in odfvs:
        transformation: Any = odfv.feature_transformation  # pandas mode: a plain function
        out = pd.concat([out, transformation.udf(out)[names]], axis=1)
    return out.sort_values(_ROW).drop(columns=[_ROW]).reset_index(drop=True)


def _asof_view(
    rows: pd.DataFrame, path: str, keys: list[str], names: list[str], ttl, created: str | None
) -> pd.DataFrame:
    cols = [*keys, C.EVENT_TS, *([created] if created else []), *names]
    table = pd.read_parquet(path, columns=cols)
    table[C.EVENT_TS] = pd.to_datetime(table[C.EVENT_TS], utc=True)
    order = [C.EVENT_TS, *([created] if created else [])]
    table = table.sort_values(order, kind="stable").drop_duplicates(
        [*keys, C.EVENT_TS], keep="last"
    )
    left = rows[[_ROW, C.EVENT_TS, *keys]].sort_values(C.EVENT_TS, kind="stable")
    for k in keys:  # merge_asof needs identical key dtypes on both sides
        table[k] = table[k].astype(left[k].dtype)
    joined = pd.merge_asof(
        left,
        table.drop(columns=[created] if created else []),
        on=C.EVENT_TS,
        by=keys,
        direction="backward",
        allow_exact_matches=True,
        tolerance=ttl if ttl and ttl.total_seconds() > 0 else None,
    )
    return joined[[_ROW, *names]]


def _feast_view(
    store: FeatureStore, rows: pd.DataFrame, view: str, names: list[str]
) -> pd.DataFrame:
    """The reference: Feast's own retrieval for one view, left-joined back by row."""
    refs = [f"{view}:{n}" for n in names]
    got = store.get_historical_features(entity_df=rows, features=refs).to_df()
    if got[_ROW].duplicated().any():
        raise ValueError(f"Feast's point-in-time join of {view} duplicated entity rows")
    return got[[_ROW, *names]]
