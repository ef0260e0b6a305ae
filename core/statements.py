"""Every CQL statement feedcast runs, prepared once per session with explicit consistency."""

from __future__ import annotations

from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from core.db import consistency
from core.settings import Settings

_WRITES = {
    "insert_user": "INSERT INTO users_by_id (user_id, created_at, follower_count, following_count) "
    "VALUES (?, ?, ?, ?)",
    "insert_post": "INSERT INTO posts_by_id (post_id, author_id, created_at, topic, media_kind, "
    "media_bytes) VALUES (?, ?, ?, ?, ?, ?)",
    "insert_post_by_author": "INSERT INTO posts_by_author (author_id, day, created_at, post_id, "
    "topic) VALUES (?, ?, ?, ?, ?)",
    "insert_follow": "INSERT INTO follows_by_user (user_id, followee_id, followee_followers) "
    "VALUES (?, ?, ?)",
    "insert_follower": "INSERT INTO followers_by_user (user_id, follower_id) VALUES (?, ?)",
    "insert_timeline": "INSERT INTO timeline_by_user (user_id, day, created_at, post_id, "
    "author_id, topic) VALUES (?, ?, ?, ?, ?, ?)",
    "insert_interaction_by_user": "INSERT INTO interactions_by_user (user_id, day, event_ts, "
    "event_id, post_id, author_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "insert_interaction_by_post": "INSERT INTO interactions_by_post (post_id, event_ts, event_id, "
    "user_id, kind) VALUES (?, ?, ?, ?, ?)",
    "insert_event_by_user": "INSERT INTO interactions_by_user (user_id, day, event_ts, event_id, "
    "post_id, author_id, kind, dwell_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "insert_event_by_post": "INSERT INTO interactions_by_post (post_id, event_ts, event_id, "
    "user_id, kind, dwell_s) VALUES (?, ?, ?, ?, ?, ?)",
    "insert_impression": "INSERT INTO impressions_by_user (user_id, day, served_at, request_id, "
    "position, post_id, author_id, model_version, score, propensity) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}

# Lightweight transactions: the first write of an id wins, a re-send comes back not applied.
_CLAIMS = {
    "claim_event": "INSERT INTO events_by_id (event_id, user_id, post_id, kind, event_ts, "
    "dwell_s) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "claim_post": "INSERT INTO posts_by_id (post_id, author_id, created_at, topic, media_kind, "
    "media_bytes) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
}

_READS = {
    "any_user": "SELECT user_id FROM users_by_id LIMIT 1",
    "get_user": "SELECT user_id, follower_count, following_count FROM users_by_id "
    "WHERE user_id = ?",
    "timeline_day": "SELECT post_id, author_id, created_at, topic FROM timeline_by_user "
    "WHERE user_id = ? AND day = ? LIMIT ?",
    "big_followees": "SELECT followee_id, followee_followers FROM follows_by_user "
    "WHERE user_id = ?",
    "blocked": "SELECT blocked_id FROM blocks_by_user WHERE user_id = ?",
    "engaged_day": "SELECT post_id FROM interactions_by_user WHERE user_id = ? AND day = ?",
    "followers_of": "SELECT follower_id FROM followers_by_user WHERE user_id = ?",
    "get_post": "SELECT post_id, author_id, created_at, topic, media_kind, media_bytes "
    "FROM posts_by_id WHERE post_id = ?",
    "all_users": "SELECT user_id FROM users_by_id",
    # Was the user about in a time range of one day? (Served a page, or engaged.)
    "served_between": "SELECT served_at FROM impressions_by_user WHERE user_id = ? AND day = ? "
    "AND served_at >= ? AND served_at < ? LIMIT 1",
    "engaged_between": "SELECT event_ts FROM interactions_by_user WHERE user_id = ? AND day = ? "
    "AND event_ts >= ? AND event_ts < ? LIMIT 1",
    "author_day": "SELECT post_id, created_at, topic FROM posts_by_author "
    "WHERE author_id = ? AND day = ? "
    "LIMIT ?",
}


class Statements:
    """Prepared statements by name: ``stmts.insert_post``, ``stmts.timeline_day`` ..."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self._prepared: dict[str, PreparedStatement] = {}
        for name, cql in _WRITES.items():
            stmt = session.prepare(cql)
            stmt.consistency_level = consistency(settings.cassandra_write_consistency)
            self._prepared[name] = stmt
        for name, cql in _CLAIMS.items():
            stmt = session.prepare(cql)
            stmt.consistency_level = consistency(settings.cassandra_write_consistency)
            stmt.serial_consistency_level = consistency("LOCAL_SERIAL")
            self._prepared[name] = stmt
        for name, cql in _READS.items():
            stmt = session.prepare(cql)
            stmt.consistency_level = consistency(settings.cassandra_read_consistency)
            self._prepared[name] = stmt

    def __getattr__(self, name: str) -> PreparedStatement:
        try:
            return self._prepared[name]
        except KeyError:
            raise AttributeError(name) from None
