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
        env="production",
        cassandra_replication_factor=3,
        api_key_hashes=[hash_key("a-real-key")],
        cursor_keys=["k2026:a-real-secret-of-some-length"],
    )
    assert ok.cassandra_write_consistency == "LOCAL_QUORUM"


def test_production_refuses_the_development_cursor_key_and_bad_keys_are_named():
    from serving.security import hash_key

    real = {"cassandra_replication_factor": 3, "api_key_hashes": [hash_key("a-real-key")]}
    with pytest.raises(ValidationError, match="development cursor key"):
        Settings(env="production", **real)
    with pytest.raises(ValidationError, match="'<id>:<secret>'"):
        Settings(cursor_keys="k1:short")
    with pytest.raises(ValidationError, match="each id once"):
        Settings(cursor_keys="k1:0123456789abcdef,k1:fedcba9876543210")
    two = Settings(cursor_keys="new:0123456789abcdef, old:fedcba9876543210")
    assert two.cursor_keys == ["new:0123456789abcdef", "old:fedcba9876543210"]


def test_settings_travel_to_a_child_process_as_environment_variables(monkeypatch, tmp_path):
    from core.settings import Settings, as_env

    s = Settings(
        redis_port=6390,
        cassandra_hosts=["10.0.0.1", "10.0.0.2"],
        serve_haproxy_ports=(9001, 9002),
        data_dir=tmp_path,
        responder_dry_run=True,
        monitoring_for_scale=0.1,
    )
    changed = as_env(s)
    assert changed["FEEDCAST_CASSANDRA_HOSTS"] == "10.0.0.1,10.0.0.2"
    assert "FEEDCAST_REDIS_HOST" not in changed  # a default stays unsaid
    every = as_env(s, every=True)
    assert every["FEEDCAST_REDIS_HOST"] == s.redis_host
    monkeypatch.setenv("FEEDCAST_REDIS_HOST", "inherited.example")  # what a child would inherit
    for name, value in every.items():
        monkeypatch.setenv(name, value)
    assert Settings() == s
    with pytest.raises(ValueError, match=r"redis_db is None"):
        as_env(s.model_copy(update={"redis_db": None}))
