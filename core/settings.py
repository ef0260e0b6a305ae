"""One typed configuration for every layer, read from ``FEEDCAST_*`` environment variables.

Build it where it is used (``Settings()`` in a command or a deployment's ``__init__``); nothing
here runs at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

Consistency = Literal["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"]


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
    ray_address: str | None = Field(
        None, description="Ray cluster address; unset = the stack's local head."
    )
    ray_port: int = Field(6380, description="GCS port of the local Ray head started by the stack.")
    ray_object_store_mb: int = Field(512, ge=78, description="Object store of the local head.")
    feed_default_limit: int = Field(20, ge=1, le=100, description="Page size when none is asked.")
    feed_max_candidates: int = Field(500, ge=10, description="Cap on candidates scored.")
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

    @field_validator("cassandra_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str) and not v.startswith("["):
            return [h.strip() for h in v.split(",") if h.strip()]
        return v

    @model_validator(mode="after")
    def _production_is_replicated(self) -> Settings:
        if self.env == "production":
            if self.cassandra_replication_factor < 3:
                raise ValueError("production needs FEEDCAST_CASSANDRA_REPLICATION_FACTOR >= 3")
            if self.cassandra_write_consistency in ("ONE", "LOCAL_ONE"):
                raise ValueError("production needs a quorum FEEDCAST_CASSANDRA_WRITE_CONSISTENCY")
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
    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    @property
    def world_dir(self) -> Path:
        return (self.data_dir or self.home) / "world"

    @property
    def feast_dir(self) -> Path:
        return (self.data_dir or self.home) / "feast"

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"
