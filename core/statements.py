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
    # The recent timeline (schema v6): TTL = what is left of the window (core.context.ttl_s).
    "insert_feed": "INSERT INTO feed_by_user (user_id, created_ms, post_id, author_id, topic) "
    "VALUES (?, ?, ?, ?, ?) USING TTL ?",
    # The user's context (schema v6), kept by core.context where it changes.
    "context_known": "UPDATE user_context SET known = true WHERE user_id = ?",
    "context_follow": "UPDATE user_context SET followees = followees + ? WHERE user_id = ?",
    "context_unfollow": "UPDATE user_context SET followees = followees - ? WHERE user_id = ?",
    "context_block": "UPDATE user_context SET blocked = blocked + ? WHERE user_id = ?",
    "context_unblock": "UPDATE user_context SET blocked = blocked - ? WHERE user_id = ?",
    "context_engaged": "UPDATE user_context USING TTL ? SET engaged = engaged + ? "
    "WHERE user_id = ?",
    "context_replace": "UPDATE user_context SET known = ?, followees = ?, blocked = ?, "
    "engaged = null WHERE user_id = ?",
    "insert_block": "INSERT INTO blocks_by_user (user_id, blocked_id) VALUES (?, ?)",
    "delete_block": "DELETE FROM blocks_by_user WHERE user_id = ? AND blocked_id = ?",
    "delete_follow": "DELETE FROM follows_by_user WHERE user_id = ? AND followee_id = ?",
    "delete_follower": "DELETE FROM followers_by_user WHERE user_id = ? AND follower_id = ?",
    "insert_interaction_by_user": "INSERT INTO interactions_by_user (user_id, day, event_ts, "
    "event_id, post_id, author_id, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "insert_interaction_by_post": "INSERT INTO interactions_by_post (post_id, event_ts, event_id, "
    "user_id, kind) VALUES (?, ?, ?, ?, ?)",
    "insert_event_by_user": "INSERT INTO interactions_by_user (user_id, day, event_ts, event_id, "
    "post_id, author_id, kind, dwell_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "insert_event_by_post": "INSERT INTO interactions_by_post (post_id, event_ts, event_id, "
    "user_id, kind, dwell_s) VALUES (?, ?, ?, ?, ?, ?)",
    "insert_impression": "INSERT INTO impressions_by_user (user_id, day, served_at, request_id, "
    "position, post_id, author_id, model_version, score, propensity, session_id, page, "
    "session_position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    "feed_recent": "SELECT post_id, author_id, created_ms, topic FROM feed_by_user "
    "WHERE user_id = ? LIMIT ?",
    "get_context": "SELECT known, followees, blocked, engaged FROM user_context WHERE user_id = ?",
    "engaged_since": "SELECT post_id, event_ts FROM interactions_by_user WHERE user_id = ? "
    "AND day = ? AND event_ts >= ?",
    "big_followees": "SELECT followee_id, followee_followers FROM follows_by_user "
    "WHERE user_id = ?",
    "blocked": "SELECT blocked_id FROM blocks_by_user WHERE user_id = ?",
    "engaged_day": "SELECT post_id FROM interactions_by_user WHERE user_id = ? AND day = ?",
    "followers_of": "SELECT follower_id FROM followers_by_user WHERE user_id = ?",
    "get_post": "SELECT post_id, author_id, created_at, topic, media_kind, media_bytes, "
    "stored_media FROM posts_by_id WHERE post_id = ?",
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

# The log of served pages as the retraining export reads it (schema v4: kept apart so that a
# keyspace not yet migrated still serves; only the export and `world advance` prepare these).
_LOG_WRITES = {
    "insert_logged_impression": "INSERT INTO impressions_by_user (user_id, day, served_at, "
    "request_id, position, post_id, author_id, model_version, propensity, shown_propensity, "
    "explored) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "insert_candidate": "INSERT INTO candidates_by_user (user_id, day, served_at, request_id, "
    "chrono_rank, post_id, author_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
}
_LOG_READS = {
    "impressions_window": "SELECT user_id, served_at, request_id, position, post_id, author_id, "
    "model_version, propensity, shown_propensity, explored FROM impressions_by_user "
    "WHERE user_id = ? AND day = ? AND served_at > ? AND served_at <= ?",
    "interactions_window": "SELECT user_id, event_ts, event_id, post_id, author_id, kind, dwell_s "
    "FROM interactions_by_user WHERE user_id = ? AND day = ? AND event_ts > ? AND event_ts <= ?",
    "candidates_window": "SELECT user_id, served_at, request_id, chrono_rank, post_id, author_id "
    "FROM candidates_by_user WHERE user_id = ? AND day = ? AND served_at > ? AND served_at <= ?",
}


def _prepare(
    session: Session, statements: dict[str, str], level: str, serial: str | None = None
) -> dict[str, PreparedStatement]:
    out = {}
    for name, cql in statements.items():
        stmt = session.prepare(cql)
        stmt.consistency_level = consistency(level)
        if serial is not None:
            stmt.serial_consistency_level = consistency(serial)
        out[name] = stmt
    return out


class Statements:
    """Prepared statements by name: ``stmts.insert_post``, ``stmts.timeline_day`` ..."""

    def __init__(self, session: Session, settings: Settings) -> None:
        write, read = settings.cassandra_write_consistency, settings.cassandra_read_consistency
        self._prepared = {
            **_prepare(session, _WRITES, write),
            **_prepare(session, _CLAIMS, write, serial="LOCAL_SERIAL"),
            **_prepare(session, _READS, read),
        }

    def __getattr__(self, name: str) -> PreparedStatement:
        try:
            return self._prepared[name]
        except KeyError:
            raise AttributeError(name) from None


class LogStatements(Statements):
    """:class:`Statements` and the served-page log of schema v4 (export, ``world advance``)."""

    def __init__(self, session: Session, settings: Settings) -> None:
        super().__init__(session, settings)
        self._prepared |= _prepare(session, _LOG_WRITES, settings.cassandra_write_consistency)
        self._prepared |= _prepare(session, _LOG_READS, settings.cassandra_read_consistency)
