"""A replica queues a media path for warming once per ``prefetch_requeue_s``, not per page."""

import pytest

from core.settings import Settings
from prefetch.planner import WarmAction
from serving.metrics import Metrics
from serving.warming import Prefetcher
from tests.integration.suite import free_ports


def _prefetcher(requeue_s: float) -> Prefetcher:
    (dead,) = free_ports(1)  # nothing listens: the background warms fail, which is fine here
    s = Settings(edge_port=dead, prefetch_requeue_s=requeue_s, redis_port=dead)

    def no_db():
        raise ConnectionError("no Cassandra in a unit test")

    return Prefetcher(s, Metrics(), no_db)


def _actions(*posts: int) -> list[WarmAction]:
    return [WarmAction(p, "thumb", 1000, 0.9, 0) for p in posts]


@pytest.mark.parametrize("requeue_s", [30.0, 0.0])
def test_a_path_queued_lately_is_not_queued_again(requeue_s):
    p = _prefetcher(requeue_s)
    try:
        assert p.submit("page", _actions(1, 2, 3)) == 3
        again = p.submit("page", _actions(2, 3, 4))
        assert again == (1 if requeue_s else 3)  # only post 4 is new within the window
    finally:
        p.close()
