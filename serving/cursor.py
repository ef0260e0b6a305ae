"""Feed cursors: opaque, tamper-proof pointers into a ranked session.

A cursor says *which user*, *which session*, *which page* (and the session position it starts
at) and *until when* it may be used, signed with HMAC-SHA256 under a key that has an id, so
keys can rotate: the first configured key signs, every configured key verifies. A cursor
expires with its session (``session_ttl_s`` after it was issued), so a retired key can be
dropped one TTL after a new one took over.

Wire form (URL-safe, no padding)::

    c1.<key id>.<base64url(payload)>.<base64url(tag)>

where ``payload`` is 32 bytes: user id (int64), page (uint32), offset (uint32), expiry (unix
seconds, int64) and the 8-byte session id; ``tag`` is the first 16 bytes of the HMAC over
``"c1.<key id>." + payload``.

Pure functions, no I/O: the feed path and the tests call them directly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

from core.settings import CURSOR_KEY

VERSION = "c1"
_PAYLOAD = struct.Struct(">qIIq8s")
_TAG_BYTES = 16
SESSION_ID_BYTES = 8
MAX_CURSOR_CHARS = 200  # a real one is ~75; anything longer is rejected unread


class CursorError(ValueError):
    """The cursor cannot be used; the message names why (the API answers 400 with it)."""


@dataclass(frozen=True)
class Cursor:
    user_id: int
    session_id: bytes  # SESSION_ID_BYTES random bytes
    page: int  # 0-based page of the session this cursor asks for
    offset: int  # session position of that page's first item
    expires_at: int  # unix seconds

    @property
    def session_hex(self) -> str:
        return self.session_id.hex()


@dataclass(frozen=True)
class Keys:
    """Signing keys by id; ``current`` signs, all verify."""

    by_id: dict[str, bytes]
    current: str

    @classmethod
    def parse(cls, entries: list[str]) -> Keys:
        """``["kid:secret", ...]`` (``Settings.cursor_keys``, checked there), the first signing."""
        by_id: dict[str, bytes] = {}
        for e in entries:
            m = CURSOR_KEY.fullmatch(e)
            if m is None or m.group(1) in by_id:
                raise ValueError("cursor keys must be '<id>:<secret>', each id once")
            by_id[m.group(1)] = m.group(2).encode()
        if not by_id:
            raise ValueError("at least one cursor key is needed")
        return cls(by_id, next(iter(by_id)))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(secret: bytes, kid: str, payload: bytes) -> bytes:
    msg = f"{VERSION}.{kid}.".encode() + payload
    return hmac.new(secret, msg, hashlib.sha256).digest()[:_TAG_BYTES]


def encode(c: Cursor, keys: Keys) -> str:
    if len(c.session_id) != SESSION_ID_BYTES:
        raise ValueError(f"a session id is {SESSION_ID_BYTES} bytes")
    payload = _PAYLOAD.pack(c.user_id, c.page, c.offset, c.expires_at, c.session_id)
    kid = keys.current
    return f"{VERSION}.{kid}.{_b64(payload)}.{_b64(_tag(keys.by_id[kid], kid, payload))}"


def decode(text: str, keys: Keys, *, user_id: int) -> Cursor:
    """The cursor in ``text``, checked for form, key, signature and owner (not for expiry:
    an expired cursor is well formed and restarts the session, see :func:`expired`)."""
    if len(text) > MAX_CURSOR_CHARS:
        raise CursorError(f"cursor is not a feedcast cursor (longer than {MAX_CURSOR_CHARS})")
    parts = text.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise CursorError("cursor is not a feedcast cursor (use next_cursor as given)")
    _, kid, body, tag = parts
    secret = keys.by_id.get(kid)
    if secret is None:
        raise CursorError(f"cursor was signed with an unknown key id {kid!r}")
    try:
        payload, given = _unb64(body), _unb64(tag)
    except (binascii.Error, ValueError) as exc:
        raise CursorError("cursor is not valid base64url") from exc
    if len(payload) != _PAYLOAD.size or not hmac.compare_digest(given, _tag(secret, kid, payload)):
        raise CursorError("cursor signature does not match (edited or corrupted)")
    owner, page, offset, expires_at, sid = _PAYLOAD.unpack(payload)
    if owner != user_id:
        raise CursorError("cursor belongs to another user")
    return Cursor(owner, sid, page, offset, expires_at)


def expired(c: Cursor, now_s: float) -> bool:
    return now_s >= c.expires_at
