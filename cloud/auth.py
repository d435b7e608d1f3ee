"""API tokens: ``pw_<prefix>_<secret>``; only SHA-256 of the whole token is stored. Roles are
ordered viewer < analyst < admin; each token belongs to one user of one bank."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["ROLES", "has_role", "hash_token", "new_token", "token_prefix"]

ROLES: Final = ("viewer", "analyst", "admin")
TOKEN_PREFIX_LEN: Final = 8


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_prefix(token: str) -> str:
    """The public part of a token (safe to show in lists and logs)."""
    parts = token.split("_", 2)  # the secret itself may contain "_"
    return parts[1] if len(parts) == 3 and parts[0] == "pw" else ""


def new_token() -> tuple[str, str, bytes]:
    """(token shown once to the user, prefix, hash to store)."""
    prefix = secrets.token_hex(TOKEN_PREFIX_LEN // 2)
    token = f"pw_{prefix}_{secrets.token_urlsafe(32)}"
    return token, prefix, hash_token(token)


def same_hash(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def has_role(role: str, needed: str) -> bool:
    """Whether ``role`` is at least ``needed`` (viewer < analyst < admin)."""
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)
