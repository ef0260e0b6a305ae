"""The integration suite's own ports and API keys (its stack runs beside a demo's), free
loopback ports for the components a session or a test starts for itself, and the readers the
feed tests pick from the session's world."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from typing import Any

TEST_SERVE_PORT = 8011
# The suite's own Redis (beside a demo's on 6379): degraded-mode tests stop and restart it.
TEST_REDIS_PORT = 6390
# A second API key with a bucket of its own, for the tests that exhaust a rate limit.
LIMITED_KEY = "feedcast-test-limited-key"
# The schemathesis run's key: its pacing against the limit must not depend on other tests.
FUZZ_KEY = "feedcast-test-fuzz-key"
TEST_RATE_PER_S = 20
# The overload test's key, and the small queue it overflows.
OVERLOAD_KEY = "feedcast-test-overload-key"


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nothing listens on now.

    The suite's media origin reads the session's own keyspace, so it cannot be shared: each
    session runs its own origin and edge (pid files and cache named by port) on ports of its
    own, and two sessions at once never serve each other's posts.
    """
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def readers(world: Any, settings: Any, n: int, skip: int = 0) -> list[int]:
    """Users with many recent timeline posts (full pages, long sessions), most first, past the
    ``skip`` busiest: each test file takes its own slice, so that its tests start from users no
    other test served (test_serving reads the busiest, test_prefetch_serving 1-29,
    test_sessions 30-39, test_read_path 40-50, test_monitoring 60-99)."""
    import pandas as pd  # lazy: suite.py is imported for its constants alone

    from core import constants as C
    from simulator.writer import timeline_rows

    tl = timeline_rows(world, settings.pull_follower_threshold)
    recent = tl[tl["created_at"] > pd.Timestamp(world.config.end) - pd.Timedelta(days=2)]
    return [int(u) for u in recent[C.USER_ID].value_counts().index[skip : skip + n]]
