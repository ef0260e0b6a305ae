"""An N-node Cassandra cluster on loopback addresses 127.0.0.2 .. 127.0.0.(N+1), for the chaos
suite: the stack's single node (stack/cassandra.py) cannot show what a replica's death does.

Each node runs from the same jars and JVM flags as the single node, with its own folder under
``<stack_dir>/cassandra-cluster/node<K>`` (config, data, logs), the same native (9042) and
storage (7000) ports on its own address, one token (evenly spaced: every node owns an equal
range), the first node as seed and a smaller heap. The daemon opens no JMX port unless asked, so
none is configured. Nodes start one after another; each is waited for until every running node
answers CQL, lists the others in ``system.peers`` and serves a scan of a table replicated on all
of them at a consistency that needs every one (so it sees them up) — health through the
driver, not nodetool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster
from cassandra.query import SimpleStatement

from core.settings import Settings
from stack import cassandra, proc

CLUSTER_NAME = "feedcast-chaos"
NATIVE_PORT = 9042
STORAGE_PORT = 7000
HEAP_MB = 640
START_TIMEOUT_S = 300
PROBE_TIMEOUT_S = 3.0
# A fresh cluster of empty nodes has nothing to stream: a joining node takes its token at once.
_EXTRA_YAML = "# Chaos cluster: empty nodes, nothing to stream at join.\nauto_bootstrap: false\n"
# system_distributed is replicated 3 times (SimpleStrategy): a scan of it at ONE, TWO or ALL
# (as many as there are nodes, up to 3) needs every node up.
_ALL_UP = "SELECT * FROM system_distributed.view_build_status LIMIT 1"
_EVERY = {1: ConsistencyLevel.ONE, 2: ConsistencyLevel.TWO}


@dataclass(frozen=True)
class Node:
    index: int  # 1-based
    host: str

    @property
    def name(self) -> str:
        """Pid-file and log name."""
        return f"cassandra-cluster-node{self.index}"


def nodes(n: int = 3) -> list[Node]:
    if not 1 <= n <= 250:
        raise ValueError(f"a loopback cluster has 1 to 250 nodes, not {n}")
    return [Node(k, f"127.0.0.{k + 1}") for k in range(1, n + 1)]


def hosts(n: int = 3) -> list[str]:
    return [node.host for node in nodes(n)]


def home(settings: Settings) -> Path:
    return settings.stack_dir / "cassandra-cluster"


def _token(node: Node, n: int) -> int:
    return -(2**63) + (node.index - 1) * (2**64 // n)


def _logdir(settings: Settings, node: Node) -> Path:
    return home(settings) / f"node{node.index}" / "logs"


def pid(settings: Settings, node: Node) -> int | None:
    return proc.read_pid(settings.stack_dir, node.name)


def probe(addresses: list[str], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, set[str] | None]:
    """What each of ``addresses`` says, asked of it alone: the peers it lists in ``system.peers``
    if it also serves a scan that needs all of ``addresses`` (so it sees them up), else None."""
    out: dict[str, set[str] | None] = dict.fromkeys(addresses)
    cluster = Cluster(
        contact_points=addresses,
        port=NATIVE_PORT,
        connect_timeout=timeout_s,
        control_connection_timeout=timeout_s,
        protocol_version=5,
    )
    try:
        session = cluster.connect()
    except Exception:
        cluster.shutdown()
        return out
    try:
        every = _EVERY.get(len(addresses), ConsistencyLevel.ALL)
        all_up = SimpleStatement(_ALL_UP, consistency_level=every)
        for host in cluster.metadata.all_hosts():
            address = host.endpoint.address
            if address not in out:
                continue
            try:
                rows = session.execute(
                    "SELECT peer FROM system.peers", timeout=timeout_s, host=host
                )
                session.execute(all_up, timeout=timeout_s, host=host)
            except Exception:
                continue
            out[address] = {str(r.peer) for r in rows}
        return out
    finally:
        cluster.shutdown()


def ready(addresses: list[str]) -> bool:
    """Every one of ``addresses`` answers, lists all the others as peers and sees them up."""
    views = probe(addresses)
    return all(v is not None and set(addresses) - {a} <= v for a, v in views.items())


def start_node(
    settings: Settings, node: Node, n: int = 3, *, heap_mb: int = HEAP_MB
) -> float | None:
    """Start ``node`` of an ``n``-node cluster and wait until it and the other live nodes see
    each other; the seconds that took, or None when it was running already."""
    if pid(settings, node) is not None:
        return None
    t0 = time.monotonic()
    lib = cassandra.ensure_installed(settings)
    folder = home(settings) / f"node{node.index}"
    seed = nodes(n)[0]
    conf = cassandra.render_config(
        folder / "data",
        folder / "cassandra.yaml",
        listen=node.host,
        native_port=NATIVE_PORT,
        storage_port=STORAGE_PORT,
        seeds=f"{seed.host}:{STORAGE_PORT}",
        cluster_name=CLUSTER_NAME,
        initial_token=_token(node, n),
        extra=_EXTRA_YAML,
    )
    argv = cassandra.java_argv(lib, conf, folder / "data", _logdir(settings, node), heap_mb)
    started = proc.start(settings.stack_dir, node.name, argv)
    wait_ready(settings, n, node=node, alive=lambda: pid(settings, node) == started)
    return time.monotonic() - t0


def wait_ready(
    settings: Settings,
    n: int = 3,
    *,
    node: Node | None = None,
    alive: Callable[[], bool] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Wait until the running nodes (and ``node``, starting) all answer and see each other."""
    live = [m.host for m in nodes(n) if m == node or pid(settings, m) is not None]
    what = "the Cassandra cluster" if node is None else f"Cassandra node {node.index}"
    proc.wait_until(
        lambda: ready(live),
        timeout_s=timeout_s,
        what=f"{what} ({', '.join(live)})",
        log=_logdir(settings, node or nodes(n)[0]) / "system.log",
        alive=alive,
    )


def up(settings: Settings, n: int = 3, *, heap_mb: int = HEAP_MB) -> dict[str, float | None]:
    """Start the nodes not running, seed first, one after another; seconds per node started
    (None: it was running already)."""
    return {node.name: start_node(settings, node, n, heap_mb=heap_mb) for node in nodes(n)}


def signal_node(settings: Settings, node: Node, sig: signal.Signals) -> int:
    """Send ``sig`` to ``node``'s process group; its pid."""
    found = pid(settings, node)
    if found is None:
        raise proc.StackError(f"Cassandra node {node.index} is not running")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(found, sig)
    return found


def kill_node(settings: Settings, node: Node) -> int:
    """SIGKILL ``node`` (a crash: no drain, no goodbye to its peers or clients) and wait until
    it is gone; its pid."""
    found = signal_node(settings, node, signal.SIGKILL)
    proc.wait_until(
        lambda: pid(settings, node) is None,
        timeout_s=60,
        what=f"the end of Cassandra node {node.index} (pid {found})",
    )
    return found


def down(settings: Settings, n: int = 3) -> list[str]:
    """Stop every node (SIGTERM, then SIGKILL after a minute), last first; the names stopped."""
    return [
        node.name
        for node in reversed(nodes(n))
        if proc.stop(settings.stack_dir, node.name, grace_s=60)
    ]


def status(settings: Settings, n: int = 3) -> dict[str, dict[str, object]]:
    """Per node: its address, pid (None: not running) and whether it answers and sees the rest."""
    views = probe(hosts(n))
    return {
        node.name: {
            "host": node.host,
            "pid": pid(settings, node),
            "peers": sorted(views[node.host] or ()),
            "answers": views[node.host] is not None,
        }
        for node in nodes(n)
    }
