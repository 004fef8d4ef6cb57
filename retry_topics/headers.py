"""The wire contract: names and encodings of the headers on retry and dead-letter records.

Every header this project writes is defined here, and only here. Encodings, chosen once:

* **integers** are unsigned **decimal ASCII** (``b"3"``, ``b"1718000000000"``): readable in
  ``kcat``/console tools and free of width or endianness questions. Only ``[0-9]+`` is
  accepted on decode; anything else raises :class:`HeaderError` naming the header.
* **times** are integers in **epoch milliseconds** (UTC wall clock).
* **text** is **UTF-8**; ``clinic.error-message`` is redacted and capped at 1024 bytes on a
  character boundary, ending in ``"…"`` when cut (see :mod:`retry_topics.redaction`).

===============================  ==========================================================
``clinic.attempts``              topic attempts already made: a record in retry tier k
                                 carries k, a dead-lettered record carries the total
``clinic.due-at``                when the record may be retried (epoch ms); retry tiers only
``clinic.original-topic``        topic / partition / offset / timestamp (epoch ms) of the
``clinic.original-partition``    record as first consumed: set on the first hop and kept
``clinic.original-offset``       unchanged on every later hop
``clinic.original-timestamp``
``clinic.first-failure-at``      epoch ms of the first and of the latest failure
``clinic.last-failure-at``
``clinic.error-class``           dotted class path of the latest error
``clinic.error-message``         redacted, capped message of the latest error
``clinic.classification``        ``transient`` or ``permanent``
``clinic.dlq-reason``            ``permanent``, ``exhausted``, ``undecodable`` or ``parked``;
                                 DLQ only
``clinic.parked-behind``         event id at the head of the record's key: the record was
                                 parked behind it (moved without a handler call)
``clinic.replay-count``          how many times an operator replayed the record from the DLQ
``clinic.event-id``              envelope event id (the dedup key), when known
``clinic.event-type``            envelope event type, when known
``traceparent`` / ``tracestate`` W3C trace context, replaced (never appended) at each hop
``clinic.replay-force``          ``1`` on records replayed with ``--force``: skip dedup once
===============================  ==========================================================

Headers this module does not know are kept, in order, in :attr:`RecordHeaders.other` and
written back unchanged, so upstream metadata survives every hop. When a known header occurs
more than once, the last occurrence wins. A null header value is forwarded as empty bytes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from retry_topics.classification import Classification
from retry_topics.errors import HeaderError
from retry_topics.redaction import MAX_ERROR_MESSAGE_BYTES, cap_utf8, redact_message

__all__ = [
    "ATTEMPTS", "CLASSIFICATION", "DLQ_REASON", "DLQ_REASONS", "DUE_AT", "ERROR_CLASS",
    "ERROR_MESSAGE", "EVENT_ID", "EVENT_TYPE", "FIRST_FAILURE_AT", "KNOWN_HEADERS",
    "LAST_FAILURE_AT", "MAX_ERROR_MESSAGE_BYTES", "ORIGINAL_OFFSET", "ORIGINAL_PARTITION",
    "ORIGINAL_TIMESTAMP", "ORIGINAL_TOPIC", "PARKED_BEHIND", "REPLAY_COUNT", "REPLAY_FORCE",
    "TRACEPARENT",
    "TRACESTATE",
    "DlqReason", "FailureInfo", "Header", "Provenance", "RecordHeaders", "cap_utf8",
    "decode_headers", "encode_headers", "redact_message", "replace_header", "replay_forced",
]  # fmt: skip

ATTEMPTS = "clinic.attempts"
DUE_AT = "clinic.due-at"
ORIGINAL_TOPIC = "clinic.original-topic"
ORIGINAL_PARTITION = "clinic.original-partition"
ORIGINAL_OFFSET = "clinic.original-offset"
ORIGINAL_TIMESTAMP = "clinic.original-timestamp"
FIRST_FAILURE_AT = "clinic.first-failure-at"
LAST_FAILURE_AT = "clinic.last-failure-at"
ERROR_CLASS = "clinic.error-class"
ERROR_MESSAGE = "clinic.error-message"
CLASSIFICATION = "clinic.classification"
DLQ_REASON = "clinic.dlq-reason"
REPLAY_COUNT = "clinic.replay-count"
EVENT_ID = "clinic.event-id"
EVENT_TYPE = "clinic.event-type"
#: The event id a parked record waits behind (the head of its key's chain).
PARKED_BEHIND = "clinic.parked-behind"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Set to ``1`` by ``dlq replay --force``: the consumer hands the event to the handler even if
#: its outcome is recorded. Not a decoded field: it rides in ``RecordHeaders.other``.
REPLAY_FORCE = "clinic.replay-force"

DlqReason = Literal["permanent", "exhausted", "undecodable", "parked"]
DLQ_REASONS: tuple[DlqReason, ...] = get_args(DlqReason)
_CLASSIFICATION_VALUES = tuple(c.value for c in Classification)  # as error messages show them

Header = tuple[str, bytes | None]

# Field of RecordHeaders -> (header name, kind). The order is the order on the wire.
_FIELDS: dict[str, tuple[str, Literal["int", "str"]]] = {
    "attempts": (ATTEMPTS, "int"),
    "due_at_ms": (DUE_AT, "int"),
    "original_topic": (ORIGINAL_TOPIC, "str"),
    "original_partition": (ORIGINAL_PARTITION, "int"),
    "original_offset": (ORIGINAL_OFFSET, "int"),
    "original_timestamp_ms": (ORIGINAL_TIMESTAMP, "int"),
    "first_failure_at_ms": (FIRST_FAILURE_AT, "int"),
    "last_failure_at_ms": (LAST_FAILURE_AT, "int"),
    "error_class": (ERROR_CLASS, "str"),
    "error_message": (ERROR_MESSAGE, "str"),
    "classification": (CLASSIFICATION, "str"),
    "dlq_reason": (DLQ_REASON, "str"),
    "replay_count": (REPLAY_COUNT, "int"),
    "event_id": (EVENT_ID, "str"),
    "event_type": (EVENT_TYPE, "str"),
    "parked_behind": (PARKED_BEHIND, "str"),
    "traceparent": (TRACEPARENT, "str"),
    "tracestate": (TRACESTATE, "str"),
}
KNOWN_HEADERS: frozenset[str] = frozenset(name for name, _ in _FIELDS.values())
_FIELD_BY_HEADER = {name: field_name for field_name, (name, _) in _FIELDS.items()}
_DECIMAL = re.compile(rb"[0-9]{1,20}")


def _bad(name: str, problem: str) -> HeaderError:
    return HeaderError(f"header {name!r} {problem}", header=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where a record was first consumed from; kept unchanged across every hop."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureInfo:
    """What went wrong with a record, as carried to the next hop."""

    attempts: int
    first_failure_at_ms: int
    last_failure_at_ms: int
    error_class: str
    error_message: str
    classification: Classification


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordHeaders:
    """Decoded headers of a record: every known header typed and optional, the rest in ``other``."""

    attempts: int | None = None
    due_at_ms: int | None = None
    original_topic: str | None = None
    original_partition: int | None = None
    original_offset: int | None = None
    original_timestamp_ms: int | None = None
    first_failure_at_ms: int | None = None
    last_failure_at_ms: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    classification: Classification | None = None
    dlq_reason: DlqReason | None = None
    replay_count: int | None = None
    event_id: str | None = None
    event_type: str | None = None
    parked_behind: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    other: tuple[Header, ...] = ()

    def __post_init__(self) -> None:
        if self.classification is not None:
            try:  # decoded headers give the text; the field holds the enum
                object.__setattr__(self, "classification", Classification(self.classification))
            except ValueError:
                raise _bad(CLASSIFICATION, f"must be one of {_CLASSIFICATION_VALUES}, "
                                           f"got {self.classification!r}") from None
        if self.dlq_reason is not None and self.dlq_reason not in DLQ_REASONS:
            raise _bad(DLQ_REASON, f"must be one of {DLQ_REASONS}, got {self.dlq_reason!r}")
        clashes = sorted({name for name, _ in self.other if name in KNOWN_HEADERS})
        if clashes:
            raise HeaderError(f"known headers {clashes} must be set as fields, not in 'other'")
        object.__setattr__(self, "other", tuple(self.other))

    @property
    def provenance(self) -> Provenance | None:
        """The original topic/partition/offset, or ``None`` if the record has not hopped yet."""
        topic, partition = self.original_topic, self.original_partition
        offset = self.original_offset
        if topic is None or partition is None or offset is None:
            return None
        return Provenance(
            topic=topic, partition=partition, offset=offset, timestamp_ms=self.original_timestamp_ms
        )

    @property
    def failure(self) -> FailureInfo | None:
        """The failure details, or ``None`` unless every failure header is present."""
        if (
            self.attempts is None
            or self.first_failure_at_ms is None
            or self.last_failure_at_ms is None
            or self.error_class is None
            or self.error_message is None
            or self.classification is None
        ):
            return None
        return FailureInfo(
            attempts=self.attempts,
            first_failure_at_ms=self.first_failure_at_ms,
            last_failure_at_ms=self.last_failure_at_ms,
            error_class=self.error_class,
            error_message=self.error_message,
            classification=self.classification,
        )

    def with_provenance(self, provenance: Provenance) -> RecordHeaders:
        """A copy carrying ``provenance`` as the original-* headers."""
        return dataclasses.replace(
            self,
            original_topic=provenance.topic,
            original_partition=provenance.partition,
            original_offset=provenance.offset,
            original_timestamp_ms=provenance.timestamp_ms,
        )

    def with_failure(self, failure: FailureInfo) -> RecordHeaders:
        """A copy carrying ``failure`` (the message is stored as given; encoding caps it)."""
        return dataclasses.replace(
            self,
            attempts=failure.attempts,
            first_failure_at_ms=failure.first_failure_at_ms,
            last_failure_at_ms=failure.last_failure_at_ms,
            error_class=failure.error_class,
            error_message=failure.error_message,
            classification=failure.classification,
        )


def _encode_int(name: str, value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(name, f"must be a non-negative integer, got {value!r}")
    return str(value).encode("ascii")


def _encode_str(name: str, value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad(name, f"is not encodable as UTF-8: {exc}") from exc


def encode_headers(headers: RecordHeaders) -> list[tuple[str, bytes]]:
    """Encode ``headers`` for the wire: known headers first (fixed order), then ``other``."""
    encoded: list[tuple[str, bytes]] = []
    for field_name, (name, kind) in _FIELDS.items():
        value = getattr(headers, field_name)
        if value is None:
            continue
        if name == ERROR_MESSAGE:
            value = cap_utf8(value)
        encode = _encode_int if kind == "int" else _encode_str
        encoded.append((name, encode(name, value)))
    encoded.extend((name, value if value is not None else b"") for name, value in headers.other)
    return encoded


def _decode_int(name: str, raw: bytes) -> int:
    if _DECIMAL.fullmatch(raw) is None:
        raise _bad(name, f"must be a decimal ASCII integer, got {raw[:40]!r}")
    return int(raw)


def _decode_str(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(name, f"is not valid UTF-8: {raw[:40]!r}") from exc


def decode_headers(headers: Sequence[Header] | None) -> RecordHeaders:
    """Decode headers as confluent-kafka returns them; a malformed known one raises HeaderError."""
    values: dict[str, int | str | None] = {}
    other: list[Header] = []
    for name, raw in headers or ():
        field_name = _FIELD_BY_HEADER.get(name)
        if field_name is None:
            other.append((name, raw))
        elif raw is None:
            values[field_name] = None
        elif _FIELDS[field_name][1] == "int":
            values[field_name] = _decode_int(name, raw)
        else:
            values[field_name] = _decode_str(name, raw)
    return RecordHeaders(**values, other=tuple(other))  # type: ignore[arg-type]


def replay_forced(headers: RecordHeaders) -> bool:
    """Whether ``dlq replay --force`` marked the record (``REPLAY_FORCE`` set to ``1``)."""
    return any(name == REPLAY_FORCE and value == b"1" for name, value in headers.other)


def replace_header(
    headers: Sequence[Header] | None, name: str, value: bytes | str
) -> list[tuple[str, bytes]]:
    """Set header ``name`` to ``value``, removing every earlier occurrence of it.

    The new header takes the place of the first old one (or goes last), so re-stamping
    ``traceparent`` at each hop never grows the header list. A ``str`` value is UTF-8 encoded.
    """
    encoded = value.encode("utf-8") if isinstance(value, str) else value
    result: list[tuple[str, bytes]] = []
    placed = False
    for existing_name, existing_value in headers or ():
        if existing_name != name:
            result.append((existing_name, existing_value if existing_value is not None else b""))
        elif not placed:
            result.append((name, encoded))
            placed = True
    if not placed:
        result.append((name, encoded))
    return result
