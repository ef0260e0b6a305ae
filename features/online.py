"""Fast online feature reads straight from Feast's Redis layout (Feast's own read is the reference).

Feast keeps one Redis hash per entity key: the key is the serialized entity key (serialization
version 3) followed by the project name; each feature is a hash field named by the 4-byte
little-endian murmur3 of ``"<view>:<feature>"`` holding a serialized ``ValueProto``, next to
a ``_ts:<view>`` timestamp field. Feast's ``get_online_features`` (Redis, no precomputed
vectors) applies no TTL on this path and returns null for a missing key or field, so neither
does this reader: the timestamps are not read at all.

One request costs one pipelined round trip: the user row once, every distinct post, author and
(user, topic) / (user, author) pair once, each an ``HMGET`` of exactly the service's fields.
With ``entity_cache_s`` the post and author rows (the same for every reader) are reused for
that long by the reader that fetched them, and only the user's own rows are read each time.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol, cast

import mmh3
import numpy as np
import pandas as pd
import redis
from feast import FeatureStore
from feast.infra.online_stores.helpers import compute_versioned_name
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Float64
from feast.value_type import ValueType
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import constants as C
from core.settings import Settings
from features.definitions import FEATURE_SERVICE, REQUEST_FIELDS
from features.request import request_time_arrays
from features.store import FEATURE_COLUMNS, open_store

_DOUBLE_TAG = 0x29  # ValueProto.double_val: field 5, wire type 1 (fixed 64-bit)
_CELL = np.dtype([("tag", "u1"), ("value", "<f8")])  # one serialized double: 9 packed bytes
_NUMERIC = ("double_val", "float_val", "int64_val", "int32_val", "bool_val", "unix_timestamp_val")
_NULL = bytes([_DOUBLE_TAG]) + struct.pack("<d", float("nan"))  # decodes to NaN, as a null
_INT64_VALUE = struct.Struct("<IIq")  # value type, length, value (entity key version 3)
_CANDIDATE_KEYS = (C.POST_ID, C.AUTHOR_ID, C.TOPIC)


def field_hash(view: str, feature: str) -> bytes:
    """The hash field under which Feast stores ``view:feature`` (its ``_mmh3``)."""
    return mmh3.hash(f"{view}:{feature}", signed=False).to_bytes(4, "little")


def key_parts(join_keys: Sequence[str]) -> tuple[bytes, list[str]]:
    """The constant head of a version-3 entity key over int64 ``join_keys``, and their order.

    The full key is ``head`` + one ``_INT64_VALUE`` per join key in that (sorted) order.
    """
    names = sorted(join_keys)
    head = [struct.pack("<I", len(names))]
    for name in names:
        encoded = name.encode("utf8")
        head.append(struct.pack("<II", ValueType.STRING.value, len(encoded)) + encoded)
    return b"".join(head), names


def int64_value(v: int) -> bytes:
    return _INT64_VALUE.pack(ValueType.INT64.value, 8, v)


def _decode_one(blob: bytes | None) -> float:
    if not blob:
        return float("nan")
    value = ValueProto.FromString(blob)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return float("nan")
    if kind not in _NUMERIC:
        raise TypeError(f"feature value of kind {kind} is not numeric")
    return float(getattr(value, kind))


def decode_values(replies: Sequence[Sequence[bytes | None]], n_fields: int) -> np.ndarray:
    """HMGET replies (one list of ``n_fields`` values per key) as a float64 matrix, NaN = null.

    When every value is a serialized double (what Feast writes for Float64 fields) or absent,
    numpy decodes the lot at once; otherwise each row that is not all doubles goes through
    ``ValueProto``, as does any 9-byte value that is not a double.
    """
    if not replies:
        return np.empty((0, n_fields))
    values = list(chain.from_iterable(replies))
    if None in values:
        values = [_NULL if v is None else v for v in values]
    flat = cast("list[bytes]", values)  # no None left
    blob = b"".join(flat)
    if len(blob) == _CELL.itemsize * len(flat) and min(map(len, flat)) == _CELL.itemsize:
        rows = list(range(len(replies)))
        blobs = [blob]
        out = np.empty((len(replies), n_fields))
    else:  # a null written as an empty value, or a kind other than double
        out = np.full((len(replies), n_fields), np.nan)
        rows, blobs = [], []
        width = _CELL.itemsize * n_fields
        for i, reply in enumerate(replies):
            row = b"".join(v or b"" for v in reply)
            if len(row) == width and min(len(v or b"") for v in reply) == _CELL.itemsize:
                rows.append(i)
                blobs.append(row)
            elif any(reply):
                out[i] = [_decode_one(v) for v in reply]
    if blobs:
        cells = np.frombuffer(b"".join(blobs), dtype=_CELL).reshape(len(rows), n_fields)
        odd = cells["tag"] != _DOUBLE_TAG
        out[rows] = cells["value"]
        for r, c in zip(*np.nonzero(odd), strict=True):
            out[rows[r], c] = _decode_one(replies[rows[r]][c])
    return out


class FeatureReader(Protocol):
    """What a caller needs of an online feature reader: the service's features of one user's
    candidates. :class:`OnlineReader` (Redis, fast) and :class:`FeastReader` (Feast's own read,
    the reference) both are one; :func:`reader_for` picks."""

    def read(
        self,
        user_id: int,
        post_ids: Sequence[int],
        author_ids: Sequence[int],
        topics: Sequence[int],
        request_epoch_s: float,
    ) -> np.ndarray:
        """float64 array of shape (len(post_ids), len(FEATURE_COLUMNS)), columns in
        FEATURE_COLUMNS order, NaN where Feast returns null (missing entity or field)."""


def _pack_fields(fields: Sequence[bytes]) -> bytes:
    """An HMGET's field arguments in Redis' wire format (RESP)."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)


@dataclass(frozen=True)
class _View:
    """One feature view of the service, as this reader fetches it."""

    name: str
    fields: list[bytes]  # hash fields, in the order of ``columns``
    packed_fields: bytes  # the same, as the tail of an HMGET in Redis' wire format (RESP)
    columns: list[int]  # where each field goes in FEATURE_COLUMNS
    candidate_key: str | None  # the join key besides user_id (None: the user row alone)
    head: bytes  # the entity key's constant head (see key_parts)
    has_user: bool  # user_id is one of the join keys
    user_first: bool  # user_id sorts before the candidate key

    def affixes(self, user: bytes, project: bytes) -> tuple[bytes, bytes]:
        """Key bytes before and after the candidate key's value, for one user."""
        if not self.has_user:
            return self.head, project
        if self.user_first or self.candidate_key is None:
            return self.head + user, project
        return self.head, user + project


class _NearCache:
    """One view's rows by id, with the time each was read: a dict from id to a slot of two
    arrays, so a request's hundreds of lookups are one dict pass and two vector operations
    (not a numpy row copy per id). Bounded: past ``max_rows`` it starts over."""

    def __init__(self, n_fields: int, max_rows: int) -> None:
        self.max_rows = max_rows
        self.slot: dict[int, int] = {}
        self.rows = np.empty((min(max_rows, 1024), n_fields))
        self.stamps = np.full(len(self.rows), -np.inf)

    def lookup(self, ids: list[int], fresh_after: float, block: np.ndarray) -> list[int]:
        """Fill ``block``'s rows of the fresh ids; the indices (into ``ids``) of the others."""
        get = self.slot.get
        slots = np.fromiter((get(v, -1) for v in ids), np.int64, len(ids))
        known = slots >= 0
        hit = known.copy()
        hit[known] = self.stamps[slots[known]] >= fresh_after
        block[hit] = self.rows[slots[hit]]
        return np.flatnonzero(~hit).tolist()

    def store(self, ids: list[int], values: np.ndarray, stamp: float) -> None:
        """Remember ``values[k]`` as the row of ``ids[k]``, read at ``stamp``."""
        if len(self.slot) + len(ids) > self.max_rows:
            self.slot.clear()
        slots = []
        for v in ids:
            k = self.slot.get(v)
            if k is None:
                k = self.slot[v] = len(self.slot)
            slots.append(k)
        if slots and max(slots) >= len(self.rows):
            grow = max(max(slots) + 1, 2 * len(self.rows))
            self.rows = np.resize(self.rows, (grow, self.rows.shape[1]))
            self.stamps = np.concatenate([self.stamps, np.full(grow - len(self.stamps), -np.inf)])
        self.rows[slots] = values
        self.stamps[slots] = stamp


class OnlineReader:
    """Reads the feature service's online values from Redis in one pipelined round trip.

    The views and fields come from the Feast registry once, at construction; afterwards no
    Feast code runs on the read path. Every command is a single-key ``HMGET`` sent through a
    non-transactional pipeline, so a ``redis.RedisCluster`` client works as well (redis-py
    splits the pipeline by node); pass one as ``client``.

    Args:
        settings: Redis address, database, timeout and the Feast project.
        store: An open feature store to read the registry from (opened from settings if None).
        client: A Redis client to use instead of one built from settings.
        entity_cache_s: Reuse a post's, author's or topic's values for this long (0: never).
            Those rows are the same for every reader and change only at materialization, so a
            replica that serves many readers reads each once per interval instead of once per
            request; the values can then lag a materialization by up to this long. Rows keyed
            by the user are always read.
        cache_max_rows: Bound on the rows kept per view (past it, that view's cache restarts).
    """

    def __init__(
        self,
        settings: Settings,
        store: FeatureStore | None = None,
        client: redis.Redis | redis.RedisCluster | None = None,
        entity_cache_s: float = 0.0,
        cache_max_rows: int = 200_000,
    ) -> None:
        store = store or open_store(settings)
        if store.config.entity_key_serialization_version != 3:
            raise ValueError("OnlineReader reads entity key serialization version 3 only")
        self._project = store.config.project.encode("utf8")
        self._views = self._load_views(store)
        self._created = FEATURE_COLUMNS.index("post_created_epoch_s")
        self._request_columns = [FEATURE_COLUMNS.index(f) for f in REQUEST_FIELDS]
        self._owns_client = client is None
        # Near cache of the views keyed by a post, author or topic alone (the same for every
        # reader). Off unless entity_cache_s > 0.
        self._cache_s = entity_cache_s
        self._cache: dict[str, _NearCache] = (
            {
                v.name: _NearCache(len(v.fields), cache_max_rows)
                for v in self._views
                if not v.has_user
            }
            if entity_cache_s > 0
            else {}
        )
        self._client = client or redis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            db=settings.redis_db,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            # One immediate retry for a dropped pooled connection, none for a timeout: the
            # default (3 retries, backoff up to 10 s) would stall the caller's degraded path.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )

    def _load_views(self, store: FeatureStore) -> list[_View]:
        versioned = store.config.registry.enable_online_feature_view_versioning
        on_demand = {v.name for v in store.list_on_demand_feature_views()}
        entity_types = {e.join_key: e.value_type for e in store.list_entities()}
        views, covered = [], set(REQUEST_FIELDS)
        for projection in store.get_feature_service(FEATURE_SERVICE).feature_view_projections:
            names = [f.name for f in projection.features]
            if projection.name in on_demand:
                if not set(names) <= set(REQUEST_FIELDS):
                    raise ValueError(f"on-demand view {projection.name} is not the request view")
                continue
            fv = store.get_feature_view(projection.name)
            keys = list(fv.join_keys)
            others = [k for k in keys if k != C.USER_ID]
            if (
                projection.join_key_map
                or any(entity_types.get(k) != ValueType.INT64 for k in keys)
                or not set(others) <= set(_CANDIDATE_KEYS)
                or len(others) > 1
                or (C.USER_ID not in keys and not others)
                or any(f.dtype != Float64 for f in projection.features)
            ):
                raise ValueError(f"feature view {fv.name}: a layout this reader does not handle")
            head, order = key_parts(keys)
            name = compute_versioned_name(fv, versioned)
            views.append(
                _View(
                    name=name,
                    fields=[field_hash(name, f) for f in names],
                    packed_fields=_pack_fields([field_hash(name, f) for f in names]),
                    columns=[FEATURE_COLUMNS.index(f) for f in names],
                    candidate_key=others[0] if others else None,
                    head=head,
                    has_user=C.USER_ID in keys,
                    user_first=order[0] == C.USER_ID,
                )
            )
            covered.update(names)
        if missing := set(FEATURE_COLUMNS) - covered:
            raise ValueError(f"{FEATURE_SERVICE} lacks {sorted(missing)}")
        return views

    def read(
        self,
        user_id: int,
        post_ids: Sequence[int],
        author_ids: Sequence[int],
        topics: Sequence[int],
        request_epoch_s: float,
    ) -> np.ndarray:
        """Features of one user's candidates, as Feast's ``get_online_features`` returns them.

        Returns:
            float64 array of shape (len(post_ids), len(FEATURE_COLUMNS)), columns in
            FEATURE_COLUMNS order, NaN where Feast returns null (missing entity or field).

        Raises:
            redis.RedisError: Redis could not be read (the caller degrades).
        """
        n = len(post_ids)
        if not n == len(author_ids) == len(topics):
            raise ValueError("post_ids, author_ids and topics must have the same length")
        out = np.full((n, len(FEATURE_COLUMNS)), np.nan)
        if n == 0:
            return out
        distinct: dict[str, tuple[list[int], np.ndarray]] = {}
        for key, ids in ((C.POST_ID, post_ids), (C.AUTHOR_ID, author_ids), (C.TOPIC, topics)):
            uniq, where = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
            distinct[key] = (uniq.tolist(), where)
        user = int64_value(int(user_id))
        fresh_after = time.monotonic() - self._cache_s
        plan: list[tuple[_View, np.ndarray | None, np.ndarray, list[int], list[int]]] = []
        commands: list[tuple[bytes, _View]] = []  # HMGET of the view's fields at the key
        for view in self._views:
            pre, post = view.affixes(user, self._project)
            if view.candidate_key is None:
                commands.append((pre + post, view))
                plan.append((view, None, np.empty((1, len(view.fields))), [0], []))
                continue
            values, inverse = distinct[view.candidate_key]
            block = np.empty((len(values), len(view.fields)))
            cached = self._cache.get(view.name) if not view.has_user else None
            missing = (
                cached.lookup(values, fresh_after, block)
                if cached is not None
                else list(range(len(values)))
            )
            commands.extend((pre + int64_value(values[i]) + post, view) for i in missing)
            plan.append((view, inverse, block, missing, values))
        replies = self._hmget_all(commands)
        at, stamp = 0, time.monotonic()
        for view, rows, block, missing, values in plan:
            if missing:
                block[missing] = decode_values(replies[at : at + len(missing)], len(view.fields))
                at += len(missing)
                cached = self._cache.get(view.name) if not view.has_user else None
                if cached is not None and values:
                    cached.store([values[i] for i in missing], block[missing], stamp)
            out[:, view.columns] = block if rows is None else block[rows]
        # The on-demand view's own function, on every row (Feast runs it on post_stats' output).
        times = request_time_arrays(float(request_epoch_s), out[:, self._created])
        for col, name in zip(self._request_columns, REQUEST_FIELDS, strict=True):
            out[:, col] = times[name]
        return out

    def _hmget_all(self, commands: list[tuple[bytes, _View]]) -> list[Any]:
        """Every HMGET's reply, in order, in one round trip.

        With a plain Redis client the commands are packed here and written at once to one
        pooled connection (redis-py's pipeline spends ~25 µs of Python per queued command,
        which at hundreds of commands is most of a request's feature time). A cluster client
        goes through redis-py's pipeline, which splits the commands by node. A dropped pooled
        connection is retried once on a fresh one; a timeout is not retried.
        """
        if not commands:
            return []
        client = self._client
        if not isinstance(client, redis.Redis):  # RedisCluster: one pipeline per node
            with client.pipeline(transaction=False) as pipe:
                for key, view in commands:
                    pipe.hmget(key, view.fields)
                return list(pipe.execute())
        wire = b"".join(
            b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n%s\r\n%s"
            % (len(view.fields) + 2, len(key), key, view.packed_fields)
            for key, view in commands
        )
        pool = client.connection_pool
        for attempt in (1, 2):
            conn = pool.get_connection()
            try:
                conn.send_packed_command([wire], check_health=False)
                return [conn.read_response() for _ in commands]
            except redis.ConnectionError:
                conn.disconnect()
                if attempt == 2:
                    raise
            except BaseException:
                conn.disconnect()  # replies may be left unread: never reuse this connection
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")

    def read_frame(
        self,
        user_id: int,
        post_ids: Sequence[int],
        author_ids: Sequence[int],
        topics: Sequence[int],
        request_epoch_s: float,
    ) -> pd.DataFrame:
        """:meth:`read` as a DataFrame with the FEATURE_COLUMNS as columns."""
        matrix = self.read(user_id, post_ids, author_ids, topics, request_epoch_s)
        return pd.DataFrame(matrix, columns=list(FEATURE_COLUMNS))

    def close(self) -> None:
        """Close the Redis client this reader built (one passed in is left to its owner)."""
        if self._owns_client:
            self._client.close()


class FeastReader:
    """The reference path behind the same ``read`` signature: Feast's ``get_online_features``.

    Serving uses it only when :class:`OnlineReader` refuses the registry's layout (a view keyed
    or typed in a way it does not decode): slower (~28 µs a row), never wrong.
    """

    def __init__(self, settings: Settings, store: FeatureStore | None = None) -> None:
        self._store = store or open_store(settings)

    def read(
        self,
        user_id: int,
        post_ids: Sequence[int],
        author_ids: Sequence[int],
        topics: Sequence[int],
        request_epoch_s: float,
    ) -> np.ndarray:
        from features.store import online_features

        frame = online_features(
            self._store, user_id, list(post_ids), list(author_ids), list(topics), request_epoch_s
        )
        return frame[list(FEATURE_COLUMNS)].to_numpy(np.float64)


def reader_for(
    settings: Settings, client: redis.Redis | redis.RedisCluster | None = None
) -> FeatureReader:
    """The fast reader when it understands the registry, else Feast's (and a warning)."""
    store = open_store(settings)
    try:
        return OnlineReader(settings, store, client, settings.feature_cache_s)
    except ValueError as exc:
        logging.getLogger("feedcast.features").warning(
            "fast online reader unavailable (%s): serving features through Feast", exc
        )
        return FeastReader(settings, store)
