"""Parked keys as ``lag`` shows them: how many keys wait, and for how long the oldest has.

Read from the dedup store (``parked_summary``), where the consumer keeps each key's chain of
events outstanding in retry tiers (``docs/ordering.md``). ``None`` when ``[ordering] mode``
is ``none`` or the store could not be asked: nothing is known, which is not zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from consumer.config.settings import Settings
from consumer.dedup.chains import ParkedSummary
from consumer.dedup.store import open_dedup_store


@dataclass(frozen=True, slots=True)
class ParkedKeys:
    keys: int
    oldest_age_ms: int | None


def parked_keys(summary: ParkedSummary, now_ms: int) -> ParkedKeys:
    oldest = summary.oldest_parked_at_ms
    return ParkedKeys(summary.keys, None if oldest is None else max(0, now_ms - oldest))


def parked_to_json(parked: ParkedKeys | None) -> dict[str, Any] | None:
    """The ``parked`` member of ``lag --json``: ``{"keys": n, "oldest_age_ms": ms}`` or null."""
    return None if parked is None else {"keys": parked.keys,
                                        "oldest_age_ms": parked.oldest_age_ms}


def read_parked(settings: Settings) -> ParkedKeys | None:
    """Parked keys from the dedup store (opened read-only beside the consumer), or None:
    ordering is off, or the store cannot say (``lag`` reports Kafka; this is a side note)."""
    if not settings.ordering.per_key:
        return None
    try:
        store = open_dedup_store(settings.dedup.store, settings.dedup.ttl_ms, read_only=True)
    except Exception:  # noqa: BLE001 - shown as unknown, never fatal
        return None
    try:
        return parked_keys(store.parked_summary(), int(time.time() * 1000))
    except Exception:  # noqa: BLE001 - likewise
        return None
    finally:
        store.close()
