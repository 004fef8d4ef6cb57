"""Parked keys as ``lag`` shows them: how many keys wait, and for how long the oldest has.

Read from the dedup store (``parked_summary``), where the consumer keeps each key's chain of
events outstanding in retry tiers (``docs/ordering.md``). ``None`` when ``[ordering] mode``
is ``none``; :class:`ParkedUnknown`, with the reason, when the store could not be asked
(``--json`` says ``null`` for both): nothing is known, which is not zero. The store is
opened read-only and never created: a SQLite file that does not exist (a relative
``dedup.store`` read from another folder, a cron job's) is unknown, not zero keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from consumer.config.settings import Settings
from consumer.dedup.chains import ParkedSummary
from consumer.dedup.store import open_dedup_store

__all__ = ["ParkedKeys", "ParkedReading", "ParkedUnknown", "parked_keys", "parked_to_json",
           "read_parked"]


@dataclass(frozen=True, slots=True)
class ParkedKeys:
    keys: int
    oldest_age_ms: int | None


@dataclass(frozen=True, slots=True)
class ParkedUnknown:
    """The store could not say how many keys are parked, and why."""

    reason: str


ParkedReading = ParkedKeys | ParkedUnknown | None
"""What ``lag`` learnt of parked keys; ``None``: ordering is off, there is nothing to count."""


def parked_keys(summary: ParkedSummary, now_ms: int) -> ParkedKeys:
    oldest = summary.oldest_parked_at_ms
    return ParkedKeys(summary.keys, None if oldest is None else max(0, now_ms - oldest))


def parked_to_json(parked: ParkedReading) -> dict[str, Any] | None:
    """The ``parked`` member of ``lag --json``: ``{"keys": n, "oldest_age_ms": ms}`` or null."""
    if not isinstance(parked, ParkedKeys):
        return None
    return {"keys": parked.keys, "oldest_age_ms": parked.oldest_age_ms}


def read_parked(settings: Settings) -> ParkedReading:
    """Parked keys from the dedup store (opened read-only beside the consumer), None when
    ordering is off, or unknown when the store cannot say (``lag`` reports Kafka; this is
    a side note, never fatal)."""
    if not settings.ordering.per_key:
        return None
    try:
        store = open_dedup_store(settings.dedup.store, settings.dedup.ttl_ms, read_only=True)
    except Exception as exc:  # noqa: BLE001 - shown as unknown, never fatal
        return ParkedUnknown(str(exc))
    try:
        return parked_keys(store.parked_summary(), int(time.time() * 1000))
    except Exception as exc:  # noqa: BLE001 - likewise
        return ParkedUnknown(f"dedup store: {type(exc).__name__}: {exc}")
    finally:
        store.close()
