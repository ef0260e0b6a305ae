"""A single Cassandra 5.0 node on 127.0.0.1, fetched from Maven Central and run on JDK 17.

Maven Central publishes no 5.0 binary tarball (only up to 4.0-alpha2), so the node runs as
``org.apache.cassandra.service.CassandraDaemon`` on the ``cassandra-all`` jar and its runtime
dependencies, resolved by ``mvn dependency:copy-dependencies`` from ``stack/cassandra/pom.xml``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from string import Template

from core.settings import Settings
from stack import proc

NAME = "cassandra"
HERE = Path(__file__).resolve().parent

# The module flags Cassandra's own jvm17-server.options sets for JDK 17.
JDK17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    *[
        f"--add-exports={m}=ALL-UNNAMED"
        for m in (
            "java.base/jdk.internal.misc",
            "java.base/jdk.internal.ref",
            "java.base/sun.nio.ch",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
        )
    ],
    *[
        f"--add-opens={m}=ALL-UNNAMED"
        for m in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.nio",
            "java.base/java.util.concurrent",
            "java.base/java.util",
            "java.base/java.util.concurrent.atomic",
            "java.base/java.lang",
            "java.base/java.math",
            "java.base/java.lang.reflect",
            "java.base/java.net",
        )
    ],
]


def home(settings: Settings) -> Path:
    return settings.stack_dir / "cassandra"


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise proc.StackError(f"{tool} not found: {hint}")
    return path


def ensure_installed(settings: Settings) -> Path:
    """Resolve cassandra-all and its dependencies into the stack folder; return the lib dir."""
    lib = home(settings) / f"lib-{settings.cassandra_version}"
    if (lib / ".complete").exists():
        return lib
    _require("java", "install JDK 17 (apt-get install openjdk-17-jre-headless)")
    mvn = _require("mvn", "install Maven (apt-get install maven)")
    lib.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(HERE / "cassandra" / "pom.xml"),
        f"-Dcassandra.version={settings.cassandra_version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={lib}",
        "-DincludeScope=runtime",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or not any(lib.glob("cassandra-all-*.jar")):
        raise proc.StackError(
            "could not fetch cassandra-all from Maven Central with "
            f"`{' '.join(cmd)}`:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    (lib / ".complete").write_text(settings.cassandra_version)
    return lib


def render_config(
    data: Path,
    out: Path,
    *,
    listen: str,
    native_port: int,
    storage_port: int,
    seeds: str | None = None,
    cluster_name: str = "feedcast-local",
    initial_token: int = 0,
    extra: str = "",
) -> Path:
    """Write a node's cassandra.yaml to ``out`` (data folders under ``data``); ``seeds``
    defaults to the node itself, ``extra`` is YAML appended as is."""
    for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    text = Template((HERE / "conf" / "cassandra.yaml").read_text()).substitute(
        DATA=data,
        LISTEN=listen,
        NATIVE_PORT=native_port,
        STORAGE_PORT=storage_port,
        SEEDS=seeds or f"{listen}:{storage_port}",
        CLUSTER=cluster_name,
        TOKEN=initial_token,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + extra)
    return out


def _config(settings: Settings) -> Path:
    return render_config(
        home(settings) / "data",
        home(settings) / "cassandra.yaml",
        listen=settings.cassandra_hosts[0],
        native_port=settings.cassandra_port,
        storage_port=7000 + (settings.cassandra_port - 9042),
    )


JMX_AGENT_VERSION = "1.0.1"  # io.prometheus.jmx:jmx_prometheus_javaagent, from Maven Central
JMX_CONFIG = HERE / "conf" / "cassandra-jmx.yml"  # the allowlist of MBeans it reads


def jmx_agent(settings: Settings) -> Path:
    """The Prometheus JMX agent's jar in the stack folder (fetched once with Maven)."""
    jar = home(settings) / f"jmx_prometheus_javaagent-{JMX_AGENT_VERSION}.jar"
    if jar.exists():
        return jar
    mvn = _require("mvn", "install Maven (apt-get install maven)")
    cmd = [
        mvn, "-q", "-B", "dependency:copy",
        f"-Dartifact=io.prometheus.jmx:jmx_prometheus_javaagent:{JMX_AGENT_VERSION}",
        f"-DoutputDirectory={jar.parent}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not jar.exists():
        raise proc.StackError(
            "could not fetch the Prometheus JMX agent from Maven Central with "
            f"`{' '.join(cmd)}`:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return jar


def java_argv(
    lib: Path, conf: Path, data: Path, logdir: Path, heap_mb: int, agent: str | None = None
) -> list[str]:
    """The command line of one node: its config, data and log folders, heap, JDK 17 flags, and
    ``agent`` (a ``-javaagent:`` argument) where given."""
    heap = f"{heap_mb}m"
    return [
        _require("java", "install JDK 17 (apt-get install openjdk-17-jre-headless)"),
        *([agent] if agent else []),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Xss512k",
        *JDK17_FLAGS,
        f"-Dcassandra.config=file://{conf}",
        f"-Dcassandra.storagedir={data}",
        f"-Dcassandra.logdir={logdir}",
        f"-Dlogback.configurationFile=file://{HERE / 'conf' / 'logback.xml'}",
        "-Dcassandra-foreground=yes",
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra.ring_delay_ms=0",
        "-Dcassandra.superuser_setup_delay_ms=0",
        "-cp",
        f"{lib}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]


def answers(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when the native port accepts CQL (a query runs, not just a TCP connect)."""
    try:
        with socket.create_connection(
            (settings.cassandra_hosts[0], settings.cassandra_port), timeout=timeout_s
        ):
            pass
    except OSError:
        return False
    from core.db import connect  # lazy: cassandra-driver ~0.1 s at import; only this check

    try:
        cluster, session = connect(settings, keyspace=None, connect_timeout_s=timeout_s)
    except Exception:
        return False
    try:
        session.execute("SELECT release_version FROM system.local", timeout=timeout_s)
        return True
    except Exception:
        return False
    finally:
        cluster.shutdown()


def up(settings: Settings) -> str:
    if proc.read_pid(settings.stack_dir, NAME) is not None or answers(settings):
        return "already running"
    lib = ensure_installed(settings)
    conf = _config(settings)
    logdir = settings.stack_dir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    # Its metrics for Prometheus, read in the node's own JVM from an allowlist of MBeans.
    agent = (
        f"-javaagent:{jmx_agent(settings)}=127.0.0.1:{settings.cassandra_metrics_port}:{JMX_CONFIG}"
    )
    argv = java_argv(
        lib, conf, home(settings) / "data", logdir / "cassandra", settings.cassandra_heap_mb, agent
    )
    pid = proc.start(settings.stack_dir, NAME, argv)
    proc.wait_until(
        lambda: answers(settings),
        timeout_s=240,
        what="Cassandra",
        log=logdir / f"{NAME}.log",
        alive=lambda: proc.read_pid(settings.stack_dir, NAME) == pid,
    )
    return f"started (pid {pid})"


def down(settings: Settings) -> bool:
    return proc.stop(settings.stack_dir, NAME, grace_s=60)
