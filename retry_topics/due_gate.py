"""Is the record at the head of a retry-tier partition due yet?

Each retry tier topic has one fixed delay, and records are appended in the order they failed,
so their due times increase along every partition: the head of a partition is always the
next record due. The tier consumer therefore never sleeps and never skips ahead. For the head
record it asks :func:`due_gate`:

* :class:`Ready` -> process the record now;
* :class:`Wait` ``(ms)`` -> pause the partition, seek back to this record, and resume it
  ``ms`` milliseconds later (other partitions and tiers keep flowing meanwhile).

A record without a due time (``None``) is ready: it was not delayed by us. ``max_wait_ms``
(normally the tier's delay) bounds the wait, so a due time far in the future, from a skewed
producer clock or a hand-edited header, cannot stall a partition for longer than one delay.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ready", "Wait", "due_gate"]


@dataclass(frozen=True, slots=True)
class Ready:
    """The record is due: process it now."""


@dataclass(frozen=True, slots=True)
class Wait:
    """The record is not due: pause its partition for ``ms`` milliseconds (> 0)."""

    ms: int

    def __post_init__(self) -> None:
        if self.ms <= 0:
            raise ValueError(f"Wait needs a positive number of milliseconds, got {self.ms}")


def due_gate(due_at_ms: int | None, now_ms: int, max_wait_ms: int | None = None) -> Ready | Wait:
    """Say whether a record due at ``due_at_ms`` may be processed at ``now_ms``."""
    if due_at_ms is None or due_at_ms <= now_ms:
        return Ready()
    wait_ms = due_at_ms - now_ms
    if max_wait_ms is not None:
        if max_wait_ms <= 0:
            return Ready()
        wait_ms = min(wait_ms, max_wait_ms)
    return Wait(wait_ms)
