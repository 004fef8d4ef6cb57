"""The records the runner hands around, and the fates they can meet.

``InboundRecord`` is a consumed Kafka record with its decoded event (or the decode error)
and its decoded wire headers, detached from confluent-kafka's ``Message`` so processing can
be tested without Kafka. It is built once per consumed record, so it is a plain slotted class
(a frozen dataclass costs twice as much to build); nothing mutates it after construction.
A record's fate is one of ``Delivered``, ``Duplicate`` or
``Republished`` (to a retry tier or the DLQ; its fate is durable only when the broker
acknowledges it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from consumer.codec import EventRecord
from consumer.errors import UndecodableRecord
from retry_topics.headers import Header, RecordHeaders
from retry_topics.routing import DeadLetter, RetryTo


@dataclass(slots=True, eq=False)
class InboundRecord:
    """One consumed record, decoded as far as it could be (fields in wire order)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    raw_headers: tuple[Header, ...]
    headers: RecordHeaders
    event: EventRecord | None
    decode_error: UndecodableRecord | None = None

    # Read many times per record on the hot path: computed once, not properties.
    event_id: str | None = field(init=False)
    event_type: str | None = field(init=False)
    attempt: int = field(init=False)
    """This topic attempt's number: 1 on the main topic, k+1 in retry tier k."""

    def __post_init__(self) -> None:
        event = self.event
        if event is None:
            self.event_id = self.event_type = None
        else:
            self.event_id = str(event["event_id"])
            self.event_type = str(event["event_type"])
        self.attempt = (self.headers.attempts or 0) + 1

    @property
    def replayed(self) -> bool:
        """Came back from the DLQ through an operator's replay."""
        return (self.headers.replay_count or 0) > 0


@dataclass(slots=True)
class Delivered:
    record: InboundRecord
    kind: Literal["delivered"] = "delivered"


@dataclass(slots=True)
class Duplicate:
    record: InboundRecord
    prior: str  # the outcome recorded earlier: delivered | dead_lettered
    kind: Literal["duplicate"] = "duplicate"


@dataclass(frozen=True, slots=True)
class Republished:
    """Sent to a retry tier or the DLQ; final once the broker acknowledged it."""

    record: InboundRecord
    destination: RetryTo | DeadLetter
    error_class: str
    kind: Literal["retried", "dead_lettered"]


Fate = Delivered | Duplicate | Republished
