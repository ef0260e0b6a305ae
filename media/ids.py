"""Server-assigned 64-bit post ids for uploads, in Instagram's layout: time, shard, sequence.

``id = (ms since EPOCH) << 23 | shard << 10 | sequence``: 41 bits of milliseconds (69 years from
2025-01-01), 13 bits of shard (8,192 id makers at once, each given its own), 10 bits of sequence
(1,024 ids per maker per millisecond). Ids sort by time, need no coordination past the shard,
and carry their creation time.

Every upload id is at least :data:`FIRST_UPLOAD_ID` (2^40: any millisecond after 2025-01-01
00:02:11), and ids announced through ``POST /v1/posts`` or written by the simulator are below
it, so the two never meet. An id above 2^53 loses precision in a JavaScript number: the API
gives it as a string too (``post_id_str``).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

EPOCH_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
SHARD_BITS, SEQ_BITS = 13, 10
SHARDS = 1 << SHARD_BITS
FIRST_UPLOAD_ID = 1 << 40  # announced and simulated ids are below this; uploads at or above


def compose(ms: int, shard: int, seq: int) -> int:
    if not 0 <= shard < SHARDS or not 0 <= seq < 1 << SEQ_BITS:
        raise ValueError(f"shard {shard} or sequence {seq} out of range")
    since = ms - EPOCH_MS
    if not 0 <= since < 1 << 41:
        raise ValueError(f"time {ms} ms is outside the id's 41-bit window from 2025-01-01")
    return since << (SHARD_BITS + SEQ_BITS) | shard << SEQ_BITS | seq


def parts(post_id: int) -> tuple[int, int, int]:
    """(epoch ms, shard, sequence) of an upload id."""
    seq = post_id & ((1 << SEQ_BITS) - 1)
    shard = (post_id >> SEQ_BITS) & (SHARDS - 1)
    return (post_id >> (SHARD_BITS + SEQ_BITS)) + EPOCH_MS, shard, seq


def is_upload_id(post_id: int) -> bool:
    return post_id >= FIRST_UPLOAD_ID


class IdMaker:
    """One maker's ids: strictly increasing; at most 1,024 a millisecond (then it waits for the
    next). ``shard`` must be unique among the makers alive at once."""

    def __init__(self, shard: int, clock_ms: object = None) -> None:
        if not 0 <= shard < SHARDS:
            raise ValueError(f"shard {shard} out of range 0..{SHARDS - 1}")
        self.shard = shard
        self._clock = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._ms, self._seq = 0, 0

    def next(self) -> int:
        with self._lock:
            now = int(self._clock())  # type: ignore[operator]
            if now < self._ms:  # the clock stepped back: stay on the last millisecond
                now = self._ms
            if now == self._ms:
                self._seq += 1
                while self._seq >= 1 << SEQ_BITS:  # this millisecond is used up
                    now = int(self._clock())  # type: ignore[operator]
                    if now > self._ms:
                        self._seq = 0
                        break
            else:
                self._seq = 0
            self._ms = now
            return compose(now, self.shard, self._seq)
