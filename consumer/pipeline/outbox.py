"""How a record leaves for a retry tier or the DLQ: sent at once, or kept for a transaction.

A hop settles its source record: once the record is in the next topic, the source offset
may be committed. Two ways to make that true, chosen by ``[kafka] transactional_hops``:

* ``AckedHops`` (at-least-once): the hop is produced at once; its fate counts when the
  broker acknowledges it, and only then is the source offset stored. A crash between the
  two makes the next owner process the source record again: a second hop.
* ``HopOutbox`` (exactly-once): the hop is kept until the poll thread commits it together
  with the source offset it settles, in one Kafka transaction (see ``Runner``). Either both
  happen or neither; readers of the tiers and the DLQ read committed records only.

Workers call ``send`` from their own threads; the poll thread owns everything else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from consumer.pipeline.records import Republished

OnAck = Callable[[str | None], None]
"""Called once the broker acknowledged (None) or refused (error text) a published record."""

HopHeaders = list[tuple[str, bytes]]


class Publisher(Protocol):
    """Sends a record and reports its acknowledgement later (port; Kafka producer at the edge)."""

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: HopHeaders, on_ack: OnAck) -> None: ...


@dataclass(frozen=True, slots=True)
class Hop:
    """A record on its way to ``topic`` (a retry tier or the DLQ), and the fate it settles."""

    fate: Republished
    topic: str
    key: bytes | None
    value: bytes | None
    headers: HopHeaders


class HopSender(Protocol):
    """Where a worker hands a hop (thread-safe)."""

    def send(self, hop: Hop) -> None: ...


class AckedHops:
    """At-least-once hops: produced at once, each fate reported with its acknowledgement."""

    def __init__(self, publisher: Publisher,
                 on_ack: Callable[[Republished, str | None], None]) -> None:
        self._publisher = publisher
        self._on_ack = on_ack

    def send(self, hop: Hop) -> None:
        fate, report = hop.fate, self._on_ack
        self._publisher.publish(hop.topic, hop.key, hop.value, hop.headers,
                                lambda error: report(fate, error))


class HopOutbox:
    """Transactional hops: kept, in the order sent, until the poll thread takes them."""

    def __init__(self) -> None:
        self._hops: list[Hop] = []
        self._lock = threading.Lock()

    def send(self, hop: Hop) -> None:
        with self._lock:
            self._hops.append(hop)

    def take(self) -> list[Hop]:
        """Every hop sent since the last ``take``, oldest first."""
        with self._lock:
            hops, self._hops = self._hops, []
        return hops
