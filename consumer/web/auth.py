"""Who may use the review page: users from ``[serve] users``, argon2 password hashes, roles.

A ``viewer`` reads; an ``operator`` also replays, discards and reveals PHI. Passwords are
checked with argon2-cffi's ``PasswordHasher`` (argon2id, the OWASP recommendation); an unknown
name is checked against a dummy hash, so a wrong name takes as long as a wrong password.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from consumer.config.settings import ServeUser

OPERATOR = "operator"
VIEWER = "viewer"


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash("not a password anyone has")


def hash_password(password: str) -> str:
    """The argon2id hash to put into ``[serve] users`` for ``password``."""
    if not password:
        raise ValueError("the password must not be empty")
    return _hasher().hash(password)


def authenticate(users: Sequence[ServeUser], name: str, password: str) -> ServeUser | None:
    """The user ``name`` if ``password`` is theirs, else None."""
    user = next((u for u in users if u.name == name), None)
    try:
        _hasher().verify(user.password_hash if user is not None else _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return user


def find_user(users: Sequence[ServeUser], name: object) -> ServeUser | None:
    return next((u for u in users if u.name == name), None)


def may_act(user: ServeUser) -> bool:
    """Replay, discard and reveal need the operator role."""
    return user.role == OPERATOR
