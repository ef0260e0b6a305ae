import pytest
from pydantic import ValidationError

from core.schema import migrations
from core.settings import Settings


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("FEEDCAST_CASSANDRA_HOSTS", "10.0.0.1, 10.0.0.2")
    monkeypatch.setenv("FEEDCAST_REDIS_PORT", "6390")
    s = Settings()
    assert s.cassandra_hosts == ["10.0.0.1", "10.0.0.2"]
    assert s.redis_url.endswith(":6390/0")


def test_settings_refuse_bad_values(monkeypatch):
    monkeypatch.setenv("FEEDCAST_CASSANDRA_READ_CONSISTENCY", "MOST")
    with pytest.raises(ValidationError, match="cassandra_read_consistency"):
        Settings()


def test_migrations_are_numbered_and_idempotent_statements():
    found = migrations()
    assert [v for v, _, _ in found] == sorted({v for v, _, _ in found})
    for _, _, statements in found:
        assert statements
        # Either idempotent by itself, or an ADD the runner treats as done when re-applied.
        assert all("IF NOT EXISTS" in s or s.startswith("ALTER TABLE") for s in statements)


def test_production_refuses_an_unreplicated_keyspace():
    from serving.security import hash_key

    with pytest.raises(ValidationError, match="REPLICATION_FACTOR"):
        Settings(env="production")
    ok = Settings(
        env="production", cassandra_replication_factor=3, api_key_hashes=[hash_key("a-real-key")]
    )
    assert ok.cassandra_write_consistency == "LOCAL_QUORUM"
