import hashlib

from bench.chaos_hostile import _gist, bad_keys, near_key
from serving.security import DEV_API_KEY, DEV_API_KEY_HASH, ApiKeys


def test_near_key_shares_the_hash_prefix_and_is_still_refused():
    key = near_key(DEV_API_KEY)
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert digest[:5] == DEV_API_KEY_HASH.removeprefix("sha256:")[:5]
    assert ApiKeys([DEV_API_KEY_HASH]).identify(key) is None


def test_every_hostile_key_variant_is_one_the_guard_refuses():
    keys = ApiKeys([DEV_API_KEY_HASH])
    for name, case in bad_keys(DEV_API_KEY).items():
        presented = case["headers"].get("X-API-Key", b"")
        text = presented.decode("latin-1") if isinstance(presented, bytes) else presented
        assert keys.identify(text or None) is None, name


def test_gist_keeps_the_refused_global_without_terminal_escapes():
    exc = ValueError(
        "Weights only load failed. \x1b[1mdo not\x1b[0m\n\nUnsupported global: io.open"
    )
    assert _gist(exc) == "Unsupported global: io.open"
