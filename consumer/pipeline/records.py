"""The records the runner hands around, and the fates they can meet.

``InboundRecord`` is a consumed Kafka record with its wire headers, detached from
confluent-kafka's ``Message`` so processing can be tested without Kafka. Its value is
decoded by whoever processes it (``decode``), right before processing, so a chunk's decoded
events are still in the CPU cache when they are handled; once its fate is decided the
processor drops the event again. It is built once per consumed record, so it is a plain
slotted class (a frozen dataclass costs twice as much to build).

Its headers are decoded into ``RecordHeaders`` on first use of ``headers``, not when it is
built. Why: a main-topic record from ``clinic-events publish`` carries the event id and type
(and possibly a ``traceparent``), which processing never reads from the headers, and building
a ``RecordHeaders`` costs ~6 µs, as much again as the rest of the framework's work on such a
record. What every record needs is read off the raw pairs in one scan: its attempt number (a
record without ``clinic.attempts`` is attempt 1 whatever else it carries) and whether it
carries a trace context (``traced``, which decides whether processing needs a span scope at
all). Retry-tier records
carry ``clinic.attempts``, so theirs are decoded at once. A record's fate is one of
``Delivered``, ``Duplicate`` or ``Republished`` (to a retry tier or the DLQ; its fate is
durable only when the broker acknowledges it).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.trace import Span

from consumer.errors import UndecodableRecord
from consumer.events.codec import EventCodec, EventRecord
from retry_topics.errors import HeaderError
from retry_topics.headers import (
    ATTEMPTS,
    TRACEPARENT,
    TRACESTATE,
    Header,
    RecordHeaders,
    decode_headers,
)
from retry_topics.routing import DeadLetter, RetryTo

NO_HEADERS = RecordHeaders()
"""The decoded form of no headers, shared by every record whose headers decode to nothing."""


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
    decoded_headers: RecordHeaders | None = None  # None: not decoded yet (see ``headers``)
    event: EventRecord | None = None  # None: not decoded (yet), undecodable, or released
    decode_error: UndecodableRecord | None = None

    # Read many times per record on the hot path: computed once, not properties.
    event_id: str | None = field(init=False, default=None)
    event_type: str | None = field(init=False, default=None)
    clinic_id: str | None = field(init=False, default=None)
    """The envelope's clinic (a tenant, not PHI): operators' notifications count by it."""
    attempt: int = field(init=False)
    """This topic attempt's number: 1 on the main topic, k+1 in retry tier k."""
    traced: bool = field(init=False, default=False)
    """It carries a ``traceparent`` or ``tracestate``: processing hands the context on."""
    carried_failure: object = field(init=False, default=None)
    """The processor's failure of a first call made where retries could not wait (the
    poll thread); the lane that takes the record over retries from it."""
    carried_span: Span | None = field(init=False, default=None)
    """The ``process`` span of that first call, which the lane's retries continue (only
    when an SDK tracer records spans)."""
    probe: bool = field(init=False, default=False)
    generation: int = field(init=False, default=0)
    """The ownership generation of its partition when accepted (``pipeline.ownership``)."""
    chained: bool = field(init=False, default=False)
    """Its event is in its key's chain (``pipeline.ordering``): once its fate is durable it
    leaves the chain, or stays there as dead-lettered."""
    """Sent while the downstream breaker is open, to find out whether it is back."""

    def __post_init__(self) -> None:
        if self.event is not None:  # built decoded (tests, tools); the runner decodes later
            self._identify(self.event)
        counted = self.decoded_headers is not None
        for name, _ in self.raw_headers:  # one scan for what every record needs
            if name == ATTEMPTS:
                counted = True
            elif name in (TRACEPARENT, TRACESTATE):
                self.traced = True
        self.attempt = (self.headers.attempts or 0) + 1 if counted else 1

    @property
    def headers(self) -> RecordHeaders:
        """The decoded headers; malformed known headers count as none at all (``NO_HEADERS``).

        Malformed provenance must not make a record unprocessable: it is processed as a
        first attempt, and its raw headers still travel on unchanged.
        """
        decoded = self.decoded_headers
        if decoded is None:
            decoded = NO_HEADERS
            if self.raw_headers:
                with suppress(HeaderError):
                    decoded = decode_headers(self.raw_headers)
            self.decoded_headers = decoded
        return decoded

    def _identify(self, event: EventRecord) -> None:
        self.event_id = str(event["event_id"])
        self.event_type = str(event["event_type"])
        clinic = event.get("clinic_id")  # in every schema version; absent in hand-made tests
        self.clinic_id = None if clinic is None else str(clinic)

    def decode(self, codec: EventCodec) -> None:
        """Decode ``value`` into ``event`` (or ``decode_error``), unless that was done."""
        if self.event is not None or self.decode_error is not None:
            return
        try:
            event = codec.decode(self.value)
        except UndecodableRecord as exc:
            self.decode_error = exc
            return
        self.event = event
        self._identify(event)

    def stated_identity(self) -> tuple[str | None, str | None]:
        """The event id and type: the decoded event's, or for an undecodable value the headers'.

        Why: an undecodable record (its publisher stamped ``clinic.event-id`` and
        ``clinic.event-type``) is shown by ``dlq show`` under its header's id, so its outcome
        line must carry that id too, or grepping an event id finds the dead letter but not
        its story. Only for outcome lines: ``event_id`` stays None, so the dedup store never
        records an id that no decoded value vouches for; and records that decode fine never
        have their headers decoded here.
        """
        if self.decode_error is None or self.event_id is not None:
            return self.event_id, self.event_type
        headers = self.headers
        return headers.event_id, headers.event_type

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
    """Sent to a retry tier or the DLQ; final once the broker acknowledged it.

    ``parked``: moved without a handler call, behind the event ``behind`` of its key
    (a parked record that follows a dead-lettered head to the DLQ is ``dead_lettered``
    with ``behind`` set).
    """

    record: InboundRecord
    destination: RetryTo | DeadLetter
    error_class: str
    kind: Literal["retried", "dead_lettered", "parked"]
    behind: str | None = None


@dataclass(frozen=True, slots=True)
class Held:
    """Not decided: the downstream is down (breaker open) or dead letters are halted (flood
    guard). Its offset stays unstored; it is processed again when the breaker closes, or
    after a restart."""

    record: InboundRecord
    reason: Literal["outage", "flood_guard"]
    kind: Literal["held"] = "held"


@dataclass(frozen=True, slots=True)
class Dropped:
    """Its partition was taken away: nothing was done with it; its new owner decides."""

    record: InboundRecord
    kind: Literal["dropped"] = "dropped"


Fate = Delivered | Duplicate | Republished | Held | Dropped
