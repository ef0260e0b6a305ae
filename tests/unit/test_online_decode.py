"""The fast reader's key, field and value encodings are byte-for-byte Feast's own."""

import math
import struct

import numpy as np
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.online import decode_values, field_hash, int64_value, key_parts


def _double(x: float) -> bytes:
    return Value(double_val=x).SerializeToString()


@pytest.mark.parametrize(
    ("view", "feature"),
    [("user_stats", "user_likes_1d"), ("user_topic_stats", "user_topic_like_rate"), ("v", "")],
)
def test_field_hash_is_feasts_mmh3(view, feature):
    assert field_hash(view, feature) == _mmh3(f"{view}:{feature}")


@pytest.mark.parametrize(
    "entity",
    [
        {"user_id": 7},
        {"post_id": -1},
        {"user_id": 12, "topic": 3},  # composite: Feast sorts by join key name
        {"author_id": 2**62, "user_id": 0},
    ],
)
def test_entity_key_bytes_are_feasts_version_3_serialization(entity):
    proto = EntityKey(
        join_keys=list(entity), entity_values=[Value(int64_val=v) for v in entity.values()]
    )
    head, order = key_parts(list(entity))
    ours = head + b"".join(int64_value(entity[k]) for k in order)
    assert ours == serialize_entity_key(proto, entity_key_serialization_version=3)


def test_doubles_decode_exactly_and_nulls_become_nan():
    values = [0.0, -0.0, 1.5, 1e-300, 2.0**53 + 2, float("inf")]
    replies: list[list[bytes | None]] = [
        [_double(v) for v in values],  # the fast (numpy) path
        [None] * len(values),  # a missing entity key
        [b"", _double(3.0), None, _double(float("nan")), b"", _double(4.0)],  # mixed row
    ]
    got = decode_values(replies, len(values))
    assert got.dtype == np.float64 and got.shape == (3, len(values))
    assert [struct.pack("<d", x) for x in got[0]] == [struct.pack("<d", v) for v in values]
    assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(got[2], [np.nan, 3.0, np.nan, np.nan, np.nan, 4.0])


def test_other_numeric_kinds_are_decoded_like_feast_values():
    big = Value(int64_val=2**52 + 1).SerializeToString()
    assert len(big) == len(_double(1.0))  # same length as a double: only the tag tells them apart
    rows = [
        [big, _double(1.0), _double(2.0)],
        [
            Value(int32_val=-3).SerializeToString(),
            Value(float_val=0.1).SerializeToString(),
            Value(bool_val=True).SerializeToString(),
        ],
    ]
    got = decode_values(rows, 3)
    assert got[0].tolist() == [2**52 + 1, 1.0, 2.0]
    assert got[1].tolist() == [-3.0, float(np.float32(0.1)), 1.0]


def test_a_non_numeric_value_is_refused():
    with pytest.raises(TypeError, match="string_val"):
        decode_values([[Value(string_val="x").SerializeToString()]], 1)


def test_no_replies_give_an_empty_matrix():
    got = decode_values([], 3)
    assert got.shape == (0, 3) and not math.isnan(got.sum())
