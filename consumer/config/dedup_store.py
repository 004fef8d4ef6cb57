"""The store kinds a ``dedup.store`` URL may name, by its scheme.

The one list of schemes: settings refuse any other when they load, and
``consumer.dedup.store.open_dedup_store`` picks the store by it, then checks the rest of the
URL (a SQLite file path, nothing after ``memory://``). It lives with the settings because it
is part of what a valid configuration is; the stores build on it.
"""

from __future__ import annotations

from typing import Literal

StoreKind = Literal["sqlite", "redis", "memory"]
_KIND_OF_SCHEME: dict[str, StoreKind] = {
    "sqlite": "sqlite", "redis": "redis", "rediss": "redis", "memory": "memory"}


def store_kind(url: str) -> StoreKind | None:
    """The kind of store a ``dedup.store`` URL names; ``None`` for another scheme."""
    scheme, separator, _ = url.partition("://")
    return _KIND_OF_SCHEME.get(scheme) if separator else None
