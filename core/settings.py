"""One typed configuration for every layer, read from ``FEEDCAST_*`` environment variables.

Build it where it is used (``Settings()`` in a command or a deployment's ``__init__``); nothing
here runs at import time.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core import cpucap

REPO_ROOT = Path(__file__).resolve().parent.parent

Consistency = Literal["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"]

# The development API key: well known on purpose, so that a local stack and the tests can call
# the feed without setup. Its hash is the default of ``api_key_hashes``; production refuses it.
DEV_API_KEY = "feedcast-dev-key"
# The development cursor key, public for the same reason; production refuses it.
DEV_CURSOR_KEY = "dev:feedcast-dev-cursor-secret"
DEV_API_KEY_HASH = "sha256:" + hashlib.sha256(DEV_API_KEY.encode()).hexdigest()
# Upload workers at most where neither upload_max_replicas nor a CPU cap bounds them.
UPLOAD_WORKERS_UNCAPPED = 2
CURSOR_KEY = re.compile(r"([A-Za-z0-9_-]{1,16}):(.{16,})")
_KEY_HASH = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


class Settings(BaseSettings):
    """Every knob of feedcast. Each field is ``FEEDCAST_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FEEDCAST_", extra="ignore")

    env: Literal["development", "test", "production"] = Field(
        "development",
        description="Deployment environment; production refuses single-replica Cassandra.",
    )
    home: Path = Field(
        REPO_ROOT / ".feedcast",
        description="Local stack, world data, Feast registry and logs (git-ignored).",
    )
    data_dir: Path | None = Field(
        None, description="World data and the Feast registry; unset = the home folder."
    )

    # Cassandra
    cassandra_hosts: Annotated[list[str], NoDecode] = Field(
        ["127.0.0.1"], description="Contact points, comma-separated."
    )
    cassandra_port: int = Field(9042, description="Native protocol port.")
    cassandra_keyspace: str = Field("feedcast", description="Keyspace holding every table.")
    cassandra_replication_factor: int = Field(1, ge=1, description="SimpleStrategy RF at create.")
    cassandra_local_dc: str = Field("datacenter1", description="DC for the load-balancing policy.")
    cassandra_request_timeout_s: float = Field(
        2.0, gt=0, description="Per-request client timeout (the driver's 10 s is too long)."
    )
    cassandra_connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout.")
    cassandra_read_consistency: Consistency = Field("LOCAL_ONE", description="Reads.")
    cassandra_write_consistency: Consistency = Field("LOCAL_QUORUM", description="Writes.")
    cassandra_write_concurrency: int = Field(64, ge=1, description="In-flight bulk writes.")
    cassandra_heap_mb: int = Field(1024, ge=256, description="Heap of the local stack's node.")
    cassandra_version: str = Field("5.0.6", description="cassandra-all version for the stack.")

    # Redis (Feast online store, caches)
    redis_host: str = Field("127.0.0.1", description="Redis host.")
    redis_port: int = Field(6379, description="Redis port.")
    redis_db: int = Field(0, ge=0, description="Redis logical database.")
    redis_timeout_s: float = Field(0.5, gt=0, description="Socket and connect timeout.")
    redis_maxmemory_mb: int = Field(
        2048,
        ge=16,
        description="Memory cap of the Redis the stack starts (volatile-lru: keys with a TTL, "
        "such as feed sessions and cached pages, are evicted first; Feast's rows never are).",
    )

    # MLflow
    mlflow_port: int = Field(5000, description="Port of the local tracking server.")
    mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000", description="Tracking/registry URI (a server or sqlite:///...)."
    )
    mlflow_http_timeout_s: int = Field(30, ge=1, description="MLflow client HTTP timeout.")
    experiment: str = Field("feedcast-ranker", description="MLflow experiment for training runs.")
    model_name: str = Field(
        "feed_ranker", description="Registered name of the light ranker (LightGBM)."
    )
    heavy_model_name: str = Field(
        "feed_ranker_heavy", description="Registered name of the heavy ranker (PyTorch MMoE)."
    )
    model_alias: str = Field("champion", description="Alias that serving loads.")

    # Feast
    feast_project: str = Field("feedcast", description="Feast project name (Redis key space).")

    # Serving
    serve_host: str = Field("127.0.0.1", description="Ray Serve HTTP host.")
    serve_port: int = Field(8000, description="Ray Serve HTTP port.")
    serve_ingress: Literal["haproxy", "python"] = Field(
        "haproxy",
        description="What takes HTTP in front of the replicas: Ray Serve's HAProxy (in C, "
        "replicas take requests directly; ~5x less CPU per request) or its Python proxy. Read "
        "where Ray starts (the stack's head, a local deploy); a cluster sets Ray's variables "
        "on its nodes (stack/ingress.py).",
    )
    serve_compile_light: bool = Field(
        True,
        description="Compile the light ranker to native code in each replica (treelite + "
        "tl2cgen, needs gcc; cached under <home>/compiled by the model's sha256; used only if "
        "it gives LightGBM's scores to 1e-6, else LightGBM's predict).",
    )
    serve_access_log: bool = Field(
        False,
        description="Ray Serve's access log line per request (CPU on every request; the feed's "
        "metrics count every response by status, and degraded pages are logged anyway).",
    )
    serve_control_loop_s: float = Field(
        0.5,
        gt=0,
        le=5,
        description="Period of the Serve controller's loop (autoscaling decisions, replica "
        "health, routes); Ray's default 0.1 s costs the idle controller ~34 ms of CPU a second "
        "on the 2-core machine (docs/PERFORMANCE.md). Read where Ray starts, as serve_ingress.",
    )
    ray_node_stats_s: float = Field(
        30.0,
        ge=1,
        le=600,
        description="How often each Ray node's dashboard agent gathers its processes' CPU and "
        "memory (psutil over every worker; Ray's default 5 s). Nothing here reads those stats "
        "(the alerts use Serve's own metrics); at 30 s the idle agent costs ~13 ms of CPU a "
        "second less on the 2-core machine (docs/PERFORMANCE.md). Read where Ray starts.",
    )
    serve_haproxy_ports: tuple[int, int] | None = Field(
        None,
        description="Ports of HAProxy's stats page and Prometheus endpoint, both on serve_host; "
        "unset: serve_port + 1 and + 2 (one pair per Ray head on a machine).",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster address; unset = the stack's local head."
    )
    ray_port: int = Field(6380, description="GCS port of the local Ray head started by the stack.")
    ray_object_store_mb: int = Field(512, ge=78, description="Object store of the local head.")
    ray_metrics_port: int = Field(
        8090,
        description="Prometheus endpoint of the local head's node (every replica's feed metrics).",
    )
    feed_default_limit: int = Field(20, ge=1, le=100, description="Page size when none is asked.")
    session_ttl_s: int = Field(
        300,
        ge=10,
        le=86_400,
        description="How long a ranked feed session (and its cursors) lives after its last page "
        "in Redis; a later cursor restarts the session.",
    )
    cursor_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEV_CURSOR_KEY],
        description="Cursor signing keys, comma-separated '<id>:<secret>' (secret ≥ 16 chars); "
        "the first signs, all verify. Rotate by putting a new key first and dropping the old "
        "one a session_ttl_s later.",
    )
    media_base_url: str | None = Field(
        None,
        description="Public base URL of the CDN edge in the media URLs of feed items; unset: "
        "the local edge, http://127.0.0.1:<edge_port>.",
    )
    feed_max_candidates: int = Field(
        500, ge=10, description="Cap on candidates scored (all sources together)."
    )
    light_keep: int = Field(
        100, ge=1, description="Candidates the light ranker passes on to the heavy ranker."
    )
    blend_like: float = Field(1.0, ge=0, description="Blend weight of p_like.")
    blend_comment: float = Field(2.0, ge=0, description="Blend weight of p_comment.")
    blend_save: float = Field(3.0, ge=0, description="Blend weight of p_save.")
    blend_dwell: float = Field(0.05, ge=0, description="Blend weight of E[dwell] (per second).")
    max_per_author: int = Field(2, ge=1, description="Posts of one author on a page.")
    max_out_of_network_share: float = Field(
        0.3, ge=0, le=1, description="Largest share of a page from accounts not followed."
    )
    timeline_days: int = Field(3, ge=1, description="Day buckets of timeline read per request.")
    pull_follower_threshold: int = Field(
        200,
        ge=1,
        description="Authors with more followers are pulled at read time, not fanned out.",
    )

    # Serving: candidate sources, caches, live reload, deadlines
    cap_timeline: int = Field(350, ge=0, description="Most candidates from timeline partitions.")
    context_cache_s: float = Field(
        60.0,
        ge=0,
        description="How long a Redis copy of a user's read context (follows, blocks, posts "
        "engaged with) spares the Cassandra read; events and the follow/block functions drop "
        "it, a racing read can keep it stale this long at most. 0: read Cassandra every time.",
    )
    timeline_cache_s: float = Field(
        60.0,
        ge=0,
        description="How long a Redis copy of a user's recent timeline spares the Cassandra "
        "read (fan-out puts each new post at the head of the followers' copies; a racing read "
        "can keep a post out this long at most). 0: read Cassandra every time.",
    )
    cap_pull: int = Field(100, ge=0, description="Most candidates pulled from big accounts.")
    cap_explore: int = Field(50, ge=0, description="Most candidates from the popular list.")
    popular_size: int = Field(200, ge=1, description="Posts kept in the popular list in Redis.")
    pull_cache_s: float = Field(
        10.0,
        ge=0,
        description="How long a replica reuses a big account's recent posts (0: read each time).",
    )
    feature_cache_s: float = Field(
        30.0,
        ge=0,
        description="How long a replica reuses a post's or author's online features (0: never); "
        "they change at materialization, hourly.",
    )
    page_cache_ttl_s: int = Field(
        86_400, ge=60, description="How long a served page stays as the Cassandra-down fallback."
    )
    model_poll_s: float = Field(
        5.0, gt=0, description="How often a replica checks whether its alias moved."
    )
    deadline_candidates_ms: float = Field(
        150, gt=0, description="Deadline of the candidate reads; past it, the cached page."
    )
    deadline_features_ms: float = Field(
        100, gt=0, description="Deadline of the feature read; past it, default features."
    )
    deadline_redis_ms: float = Field(
        100,
        gt=0,
        description="Timeout of the request path's other Redis calls (rate limit, prefetch).",
    )
    serve_max_ongoing_requests: int = Field(
        16, ge=1, description="Requests one replica works on at once."
    )
    serve_max_queued_requests: int = Field(
        16,
        ge=0,
        description="Requests queued at the proxy before 503 + Retry-After (admission control: "
        "a short queue sheds overload at once instead of after seconds of waiting).",
    )
    serve_request_timeout_s: float = Field(
        5.0, gt=0, description="End-to-end limit the HTTP proxy puts on one request."
    )
    serve_min_replicas: int = Field(1, ge=1, description="Autoscaling floor of feed replicas.")
    serve_max_replicas: int = Field(2, ge=1, description="Autoscaling ceiling of feed replicas.")
    serve_target_ongoing_requests: float = Field(
        8, gt=0, description="Autoscaling target of in-flight requests per replica."
    )
    serve_capacity_plan: Path | None = Field(
        None,
        description="A schedule written by `feedcast capacity plan` (*_schedule.yaml): the feed "
        "then scales on its hourly expected rate and replica bounds (serving/autoscaling.py) "
        "instead of serve_min_replicas/serve_max_replicas.",
    )
    serve_startup_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower a starting feed replica's CPU priority is (nice steps) "
        "until it is ready, so that a replacement's model loading does not starve the replicas "
        "serving; 0: none (serving/startup.py).",
    )
    serve_placement_check: bool = Field(
        True,
        description="Refuse to deploy when the deployments at their replica ceilings need more "
        "logical CPUs than the Ray cluster has: a replica that cannot be placed pends, and while "
        "one does Ray runs a full gc.collect() in every worker every ~10 s, which stalled the "
        "feed (p99 3-4x, serving/placement.py). Off only where an autoscaler adds nodes.",
    )

    # Security: API keys, per-key rate limit (shared by all replicas through Redis), body size
    api_key_hashes: Annotated[list[str], NoDecode] = Field(
        [DEV_API_KEY_HASH],
        description=(
            "SHA-256 hashes of the accepted API keys, comma-separated ('sha256:<hex>' or bare "
            "hex; `serving.security.new_key()` makes a key and its hash). The default accepts "
            f"only the public development key {DEV_API_KEY!r}, which production refuses."
        ),
    )
    rate_limit_per_s: float = Field(
        50.0, gt=0, description="Sustained requests per second allowed per API key, cluster-wide."
    )
    rate_limit_burst: int = Field(
        100, ge=1, description="Requests one API key may make at once before the rate applies."
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1, description="Largest request body accepted; larger gets HTTP 413."
    )

    # Monitoring: Prometheus and Alertmanager (Debian's), started by `feedcast stack up`
    prometheus_port: int = Field(9190, description="Port of the local Prometheus (127.0.0.1).")
    alertmanager_port: int = Field(
        9193, description="Port of the local Alertmanager (127.0.0.1); its clustering is off."
    )
    redis_exporter_port: int = Field(
        9195,
        description="Port of the Redis exporter (Debian's prometheus-redis-exporter, 127.0.0.1).",
    )
    cassandra_metrics_port: int = Field(
        9197,
        description="Port of the Prometheus JMX agent inside the stack's Cassandra (127.0.0.1): "
        "an allowlist of its MBeans (stack/conf/cassandra-jmx.yml).",
    )
    mtail_port: int = Field(
        9196,
        description="Port of mtail (127.0.0.1), which turns the gate's and the edge's access logs "
        "into series: status codes, shed 503s, cache hits (monitoring/nginx.mtail).",
    )
    monitoring_scrape_s: float = Field(
        5.0,
        ge=1,
        le=300,
        description="Prometheus scrapes every target and evaluates the alert rules this often.",
    )
    monitoring_retention: str = Field(
        "2d",
        pattern=r"^[0-9]+(ms|s|m|h|d|w|y)$",
        description="How long Prometheus keeps its series (a Prometheus duration, e.g. 2d).",
    )
    monitoring_for_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Every alert's `for` (how long its condition holds before it fires) times "
        "this, in the rules the stack's Prometheus loads; 1 in production, tests shorten it.",
    )
    monitoring_band_plan: Path | None = Field(
        None,
        description="A schedule written by `feedcast capacity schedule` whose forecast band "
        "the live request and upload rates are judged against (the responder exports it; "
        "monitoring/rules.yml alerts outside it). Default: serve_capacity_plan.",
    )

    responder_port: int = Field(
        9194, description="Port of the alert responder, Alertmanager's webhook (127.0.0.1)."
    )
    responder_enabled: bool = Field(
        True, description="The responder acts on alerts; off, it records each decision as off."
    )
    responder_dry_run: bool = Field(
        False, description="The responder records what it would do and does nothing."
    )
    responder_min_interval_s: float = Field(
        300.0,
        ge=1,
        description="The responder takes one action for one alert at most this often.",
    )
    responder_rewarm_users: int = Field(
        500,
        ge=1,
        description="Most users whose first page a re-warm fetches (the responder's answer to "
        "the edge's hit ratio collapsing: `feedcast prefetch ahead` for the coming 30 min).",
    )
    responder_rewarm_window_min: int = Field(
        30,
        ge=1,
        le=1440,
        description="The coming window whose likely users a re-warm picks (minutes).",
    )
    responder_lease_s: float = Field(
        900.0,
        ge=10,
        description="How long a replica-floor lease the responder grants on traffic above the "
        "forecast band lasts; it lapses on its own (`feedcast ops release` ends it sooner).",
    )

    # Prefetch: the media origin, the CDN edge in front of it, and the cache warmers
    origin_port: int = Field(8089, description="Port of the local media origin (127.0.0.1).")
    edge_port: int = Field(8088, description="Port of the local nginx CDN edge (127.0.0.1).")
    gate_port: int = Field(
        8087,
        description="Port of the API gate (127.0.0.1): the edge's nginx in front of Ray Serve, "
        "which sheds what is over gate_max_inflight with 503 + Retry-After at once.",
    )
    gate_max_inflight: int = Field(
        16,
        ge=1,
        description="Feed requests the gate lets through to Ray Serve at once, per gate; "
        "size it near replicas x the concurrency at which one replica reaches its capacity.",
    )
    edge_url: str | None = Field(
        None,
        description="Base URL of the CDN edge the service warms (a PoP's warm endpoint); "
        "unset: the local edge, http://127.0.0.1:<edge_port>.",
    )
    edge_cache_mb: int = Field(
        1024, ge=16, description="Disk the edge's proxy cache may use before it evicts (LRU)."
    )
    media_scale: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of a media object's simulated size the local origin serves "
        "(0.1: a tenth, so loopback and disk are not what a run measures).",
    )
    media_engine: Literal["pillow", "vips"] = Field(
        "pillow",
        description="Library that decodes, resizes and encodes uploaded photos (chosen by "
        "`python -m bench.run media`: Pillow, or libvips through pyvips).",
    )
    media_ssim_floor: float = Field(
        0.93,
        gt=0.5,
        lt=1,
        description="Each rendition's quality is the lowest whose SSIM on luma against the "
        "resized original reaches what a plain JPEG at quality 85 of it reaches, and never less "
        "than this floor (bench/results/media.json).",
    )
    upload_max_bytes: int = Field(
        20_000_000, ge=1024, description="Largest upload body accepted (413 above)."
    )
    upload_max_pixels: int = Field(
        50_000_000,
        ge=10_000,
        description="Largest width x height an upload may declare in its header; more is "
        "refused before decoding (a decompression bomb).",
    )
    upload_quota_per_hour: int = Field(
        200, ge=1, description="Uploads one API key may make per clock hour (429 past it)."
    )
    upload_max_inflight: int = Field(
        4,
        ge=1,
        description="Uploads in flight at the API gate at once, counted apart from the other "
        "routes' gate_max_inflight (503 + Retry-After past it).",
    )
    upload_gate_per_min: int = Field(
        240,
        ge=1,
        description="Uploads per minute the API gate admits (all keys together): about what "
        "the upload tier renders (upload_max_replicas workers at ~0.5 s a photo here); past it "
        "503 + Retry-After, so that a burst queues at the clients, not on the feed's cores.",
    )
    upload_lease_s: float = Field(
        60.0,
        gt=0,
        description="A worker holds an upload job this long; a job whose worker died is taken "
        "again by a sweeper once its lease has run out.",
    )
    upload_sweep_s: float = Field(
        10.0, gt=0, description="How often each upload worker looks for jobs whose lease ran out."
    )
    upload_max_attempts: int = Field(
        5,
        ge=1,
        description="Tries of one upload before it ends failed (a photo that does not "
        "decode fails at once).",
    )
    upload_min_replicas: int = Field(1, ge=0, description="Upload workers at least.")
    upload_max_replicas: int | None = Field(
        None,
        ge=1,
        description="Upload workers at most. Unset: one per core the CPU cap grants on this "
        "machine, rounded up (upload_cpu_fraction x its cores: 1 at 0.25 of 2 cores), or 2 with "
        "no cap. Under the cap a further worker shares the same quota: it adds no uploads per "
        "second, only its start, which was an upload burst's worst seconds for the feed "
        "(docs/RELIABILITY.md).",
    )
    upload_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="The upload tier runs this much nicer than the feed, and renders in a "
        "scheduling group of its own at this nice: on shared cores the feed's requests go "
        "first (at 10, CPU work there still cost the feed's p99 up to 3.6x; at 19, nothing: "
        "docs/RELIABILITY.md).",
    )
    upload_cpu_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="The upload tier's processes on a node (API, workers, their renders, a "
        "worker's start included) use at most this fraction of its cores together: a cgroup "
        "CPU quota, in an idle group where the kernel has one, so a burst of uploads never "
        "takes the core the feed needs next (at nice 19 alone it did: docs/RELIABILITY.md). "
        "0: no cap. Needs the cgroup v1 cpu controller writable (root); where it is not, the "
        "tier logs why and feedcast_upload_cpu_cap_cores is 0.",
    )
    blob_capacity_bytes: float | None = Field(
        None,
        gt=0,
        description="Size of the blob store, for the days-until-full gauge; unset: a local "
        "store's disk (what it holds plus what is free), else the capacity plan's "
        "storage_capacity_bytes.",
    )
    takedown_refresh_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Each feed replica checks this often whether a post was taken down (a "
        "Redis counter every takedown bumps) and re-reads the taken-down posts if so (off the "
        "request path): a takedown leaves every feed within about this long.",
    )
    takedown_full_refresh_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Each feed replica re-reads the taken-down posts at least this often "
        "even when the counter did not change (a takedown whose bump was lost); while Redis "
        "is unreachable, every takedown_refresh_s.",
    )
    takedown_grace_s: float = Field(
        7 * 86400.0,
        ge=0,
        description="A taken-down post's blobs are unreachable at once and deleted this long "
        "after the takedown (an appeal or a mistake can still restore them).",
    )
    takedown_keep_days: int = Field(
        30,
        ge=1,
        description="How long a takedown is remembered; longer than any candidate lives "
        "(timeline_days, the popular list), so a removed post never comes back.",
    )
    upload_sched_idle: bool = Field(
        False,
        description="Upload workers under SCHED_IDLE: only on CPU nothing else wants (their "
        "jobs wait while the feed saturates the cores; none is lost). Measured not to keep the "
        "feed's p99 under an upload burst (docs/RELIABILITY.md), so off by default.",
    )
    blob_url: str | None = Field(
        None,
        description="fsspec URL of the content-addressed blob store for originals and "
        "renditions (e.g. s3://bucket/feedcast on a cluster); unset: <home>/blobs.",
    )
    impressions_flush_s: float = Field(
        1.0,
        gt=0,
        le=30,
        description="A replica writes the impressions of the pages it served at most this "
        "often, all at once (Cassandra's cost is mostly per wake-up: docs/PERFORMANCE.md). A "
        "page's impressions are in Cassandra within about this long.",
    )
    prefetch_requeue_s: float = Field(
        30.0,
        ge=0,
        description="A media path a replica queued for warming is not queued again for this "
        "long (popular posts are on many pages; the edge still holds them). 0: every time.",
    )
    prefetch_concurrency: int = Field(
        4, ge=1, le=64, description="Edge warm requests in flight at once (per warmer)."
    )
    prefetch_timeout_s: float = Field(
        2.0, gt=0, description="Limit on one edge warm request, body included."
    )
    prefetch_queue_size: int = Field(
        1024, ge=1, description="Paths waiting to be warmed; past it, submitted paths are dropped."
    )
    prefetch_enabled: bool = Field(
        True,
        description="Warm the edge and Redis from served pages and impressions (the serving "
        "hook); `feedcast prefetch switch off` turns it off live, without a redeploy.",
    )
    prefetch_p_continue: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="Continuation rate (P(next item | this one)) assumed for a user, and the "
        "prior that the user's own impressions move.",
    )
    prefetch_continue_prior: float = Field(
        5.0,
        ge=0,
        description="Weight of prefetch_p_continue, in pages, against a user's own counts.",
    )
    prefetch_p_autoplay: float = Field(
        0.3,
        ge=0,
        le=1,
        description="P(a video plays long enough to stream) when the ranker gave no E[dwell].",
    )
    prefetch_threshold: float = Field(
        0.85, gt=0, le=1, description="Least probability of use of a fetched object (precision)."
    )
    prefetch_refresh_threshold: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Least probability of use of an object refreshed at the edge (marked used "
        "if cached, never fetched): likely ones too big or too uncertain to fetch.",
    )
    prefetch_lookahead: int = Field(
        2, ge=1, le=20, description="Positions ahead of the user's that are warmed."
    )
    prefetch_first_screen: int = Field(
        2, ge=0, le=20, description="Positions the app loads with the page (not warmed by it)."
    )
    prefetch_budget_bytes: int = Field(
        4_000_000, ge=0, description="Most bytes one plan (a page or an impression) warms."
    )
    prefetch_max_object_bytes: int = Field(
        1_000_000, ge=1, description="Objects above this (video streams) are left to demand."
    )

    # Retraining pipeline: export → features → train → evaluate → gate → promote
    retrain_cron: str = Field(
        "0 3 * * *",
        description="When `feedcast pipeline schedule` retrains: a crontab expression (5 fields, "
        "UTC), or 6 fields with seconds first.",
    )
    pipeline_lock_ttl_s: float = Field(
        60.0,
        gt=0,
        description="Lifetime of the Redis lock of a run; the run renews it every third of it, so "
        "a run that died frees it after at most this long.",
    )
    label_delay_s: float = Field(
        1800.0,
        ge=0,
        description="Export waits this long after an impression before taking it, so the likes, "
        "comments and saves it led to have arrived (its labels are settled).",
    )
    attribution_window_s: float = Field(
        1800.0,
        gt=0,
        description="An interaction counts for the impression of the same user and post served "
        "at most this long before it.",
    )
    gate_tolerance: float = Field(
        0.005,
        ge=0,
        description="How much worse than the champion a challenger may be on any gated metric "
        "(absolute) and still be promoted.",
    )
    min_rows_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Data validation: a run stops when its new rows per day fall below this share "
        "of the previous run's.",
    )
    train_workers: int = Field(
        1, ge=1, le=64, description="Ray Train workers of each ranker (data-parallel)."
    )

    @field_validator("cassandra_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str) and not v.startswith("["):
            return [h.strip() for h in v.split(",") if h.strip()]
        return v

    @field_validator("cursor_keys", mode="before")
    @classmethod
    def _split_cursor_keys(cls, v: object) -> object:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @field_validator("cursor_keys")
    @classmethod
    def _check_cursor_keys(cls, v: list[str]) -> list[str]:
        ids = []
        for k in v:
            if CURSOR_KEY.fullmatch(k) is None:
                raise ValueError(
                    "each cursor key must be '<id>:<secret>' with an id of 1-16 letters, digits, "
                    "'-' or '_' and a secret of at least 16 characters"
                )
            ids.append(k.partition(":")[0])
        if not ids or len(set(ids)) != len(ids):
            raise ValueError("cursor_keys needs at least one key, each id once")
        return v

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _split_key_hashes(cls, v: object) -> object:
        if isinstance(v, str):
            return [h for h in v.split(",") if h.strip()]
        return v

    @field_validator("api_key_hashes")
    @classmethod
    def _normalize_key_hashes(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for h in v:
            m = _KEY_HASH.fullmatch(h.strip().lower())
            if m is None:
                raise ValueError("each API key hash must be 'sha256:' and 64 hex digits")
            if (norm := f"sha256:{m.group(1)}") not in out:
                out.append(norm)
        return out

    @model_validator(mode="after")
    def _production_is_replicated(self) -> Settings:
        if self.env == "production":
            if self.cassandra_replication_factor < 3:
                raise ValueError("production needs FEEDCAST_CASSANDRA_REPLICATION_FACTOR >= 3")
            if self.cassandra_write_consistency in ("ONE", "LOCAL_ONE"):
                raise ValueError("production needs a quorum FEEDCAST_CASSANDRA_WRITE_CONSISTENCY")
        return self

    @model_validator(mode="after")
    def _production_has_real_keys(self) -> Settings:
        if self.env == "production":
            if not self.api_key_hashes:
                raise ValueError("production needs FEEDCAST_API_KEY_HASHES")
            if DEV_API_KEY_HASH in self.api_key_hashes:
                raise ValueError("production refuses the development API key's hash")
            if DEV_CURSOR_KEY in self.cursor_keys:
                raise ValueError("production refuses the development cursor key")
        return self

    @property
    def blend_weights(self) -> dict[str, float]:
        """Head → weight of the page score (the same utility the oracle judges by)."""
        return {
            "p_like": self.blend_like,
            "p_comment": self.blend_comment,
            "p_save": self.blend_save,
            "e_dwell": self.blend_dwell,
        }

    @property
    def upload_workers_max(self) -> int:
        """``upload_max_replicas``, or where unset what this machine's CPU cap keeps busy
        (:func:`core.cpucap.workers_for`; 2 with no cap)."""
        if self.upload_max_replicas is not None:
            return self.upload_max_replicas
        return cpucap.workers_for(self.upload_cpu_fraction) or UPLOAD_WORKERS_UNCAPPED

    @property
    def media_url(self) -> str:
        """Base of the media URLs clients get (no trailing slash)."""
        return (self.media_base_url or f"http://127.0.0.1:{self.edge_port}").rstrip("/")

    @property
    def blob_store_url(self) -> str:
        """Where originals and renditions live: ``blob_url``, else ``<data_dir>/blobs``."""
        return self.blob_url or str((self.data_dir or self.home) / "blobs")

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    @property
    def haproxy_stats_port(self) -> int:
        return self.serve_haproxy_ports[0] if self.serve_haproxy_ports else self.serve_port + 1

    @property
    def haproxy_metrics_port(self) -> int:
        return self.serve_haproxy_ports[1] if self.serve_haproxy_ports else self.serve_port + 2

    @property
    def gate_url(self) -> str:
        return f"http://127.0.0.1:{self.gate_port}"

    @property
    def world_dir(self) -> Path:
        return (self.data_dir or self.home) / "world"

    @property
    def feast_dir(self) -> Path:
        return (self.data_dir or self.home) / "feast"

    @property
    def pipeline_dir(self) -> Path:
        """Retraining runs: one folder each, holding what its steps hand on (by path)."""
        return (self.data_dir or self.home) / "pipeline"

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"


def as_env(settings: Settings, *, every: bool = False) -> dict[str, str]:
    """``settings`` as the ``FEEDCAST_*`` variables that make a process's ``Settings()`` equal
    to it: every field that differs from its default, or with ``every`` every field (so that a
    variable the child would inherit cannot override a default), lists comma-joined, tuples as
    JSON, paths absolute. A field set to None where its default is not cannot be said in the
    environment: refused."""
    out: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        default = field.get_default(call_default_factory=True)
        if value == default and not (every and value is not None):
            continue
        if value is None:
            raise ValueError(f"{name} is None, which no FEEDCAST_{name.upper()} can say")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, tuple):
            text = json.dumps(list(value))
        elif isinstance(value, Path):
            text = str(value.resolve())
        else:
            text = str(value)
        out[f"FEEDCAST_{name.upper()}"] = text
    return out
