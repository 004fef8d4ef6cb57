"""What operators see of, and do with, the dead-letter topic, decided without Kafka.

A DLQ record keeps the original key and value bytes and carries its history in the headers of
:mod:`retry_topics.headers`. :func:`parse_dlq_record` decodes both once and keeps problems on
the record instead of raising, so one broken record never hides the others. The rules of the
``clinic-events dlq`` commands live here: **filters** (:class:`DlqFilter`, checked against
the DLQ's partitions by :func:`check_partition`) and the offset ranges to read
(:func:`plan_ranges`); **status**: open, or resolved as the ledger says
(:mod:`consumer.ops.dlq.ledger`, attached to the record as :attr:`DlqRecord.resolution`);
**masking**, because a DLQ value is full of PHI: :func:`record_view`
masks every patient-identifying field and shows undecodable bytes as a length and a short
hex prefix unless the operator asks to reveal them; **terminal safety**: a key that is not
printable UTF-8 is shown as hex (:func:`key_text`) and other text with its control
characters escaped (:func:`consumer.observability.printable.printable`), since header and
key bytes come from anywhere; **grouping**
(:class:`DlqSummary`; dead letters parked behind a held head, DLQ reason ``parked``, form
groups of their own, ``parked (behind n heads)``, since they carry no error of their own);
and **the decisions** of ``replay`` (:func:`decide_replay`:
republish with reset headers, or skip with a reason: replayed too often, already delivered,
no target) and ``discard`` (:func:`decide_discard`). A resolved record is never replayed or
discarded again (:class:`AlreadyResolved`); a skipped one stays open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from consumer.dedup.store import Outcome
from consumer.errors import ClinicEventsError, UndecodableRecord
from consumer.events.codec import EventCodec, EventRecord
from consumer.events.model import event_to_json
from consumer.ops.dlq.ledger import OPEN, Resolution
from retry_topics.durations import parse_duration_ms
from retry_topics.errors import HeaderError, PolicyError
from retry_topics.headers import (
    Header,
    RecordHeaders,
    decode_headers,
    encode_headers,
)
from retry_topics.hops import replay_headers

UNDECODABLE = "(undecodable)"
NO_ERROR_CLASS = "(none)"
#: The error class ``dlq list --json`` gives the group of parked dead letters; ``parked``
#: (or this) as ``--error-class`` selects them.
PARKED = "(parked)"
MASK = "****"
RAW_PREFIX_BYTES = 8
DEFAULT_MAX_REPLAYS = 3
#: Payload fields that identify a patient, at any depth of the event.
PATIENT_IDENTIFYING_FIELDS = frozenset(
    {"first_name", "last_name", "date_of_birth", "phone", "insurance_member_id", "patient_id"}
)

SkipReason = Literal["max-replays", "already-delivered", "no-target", "malformed-headers"]


class DlqFilterError(ClinicEventsError, ValueError):
    """A DLQ filter, time or replay target given by the operator cannot be used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DlqRecord:
    """One record read from the DLQ, decoded as far as possible."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: RecordHeaders
    header_problem: str | None = None
    event: EventRecord | None = None
    decode_problem: str | None = None
    resolution: Resolution | None = None

    @property
    def status(self) -> str:
        """``open``, or how the record was resolved (``replayed``, ``discarded``)."""
        return OPEN if self.resolution is None else self.resolution.status

    @property
    def event_type(self) -> str:
        """Event type from the headers, else from the value, else ``(undecodable)``."""
        if self.headers.event_type:
            return self.headers.event_type
        return str(self.event["event_type"]) if self.event is not None else UNDECODABLE

    @property
    def event_id(self) -> str | None:
        if self.headers.event_id:
            return self.headers.event_id
        return str(self.event["event_id"]) if self.event is not None else None

    @property
    def error_class(self) -> str:
        return self.headers.error_class or NO_ERROR_CLASS

    @property
    def parked_behind(self) -> str | None:
        """The event this one waits behind (``clinic.parked-behind``): it followed that held
        head of its key to the DLQ without a handler call; None for any other dead letter."""
        return self.headers.parked_behind or None


def parse_dlq_record(
    *, partition: int, offset: int, timestamp_ms: int | None, key: bytes | None,
    value: bytes | None, headers: Sequence[Header] | None, codec: EventCodec,
    resolution: Resolution | None = None,
) -> DlqRecord:
    """Decode headers and value; a malformed header or value is noted on the record.
    ``resolution`` is what the ledger says of the record (None: open)."""
    header_problem = event = decode_problem = None
    try:
        decoded = decode_headers(headers)
    except HeaderError as exc:
        decoded, header_problem = RecordHeaders(), str(exc)
    try:
        event = codec.decode(value)
    except UndecodableRecord as exc:
        decode_problem = exc.reason
    return DlqRecord(
        partition=partition, offset=offset, timestamp_ms=timestamp_ms, key=key, value=value,
        headers=decoded, header_problem=header_problem,
        event=event, decode_problem=decode_problem, resolution=resolution,
    )


def parse_time_ms(text: str, now_ms: int) -> int:
    """ISO 8601 (naive = UTC) or a duration ago (``2h``, ``1d``) as epoch milliseconds."""
    try:
        return now_ms - parse_duration_ms(text)
    except PolicyError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise DlqFilterError(
            f"time {text!r} is neither ISO 8601 (2026-11-29T08:00:00Z) nor a duration "
            "ago (30m, 2h, 7d)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class DlqFilter:
    """Which DLQ records a command applies to; empty criteria match everything.

    Error classes match the dotted path or its last part (``PermanentError``), and
    ``parked`` selects the dead letters parked behind another event; event types match
    :attr:`DlqRecord.event_type`, and ``(undecodable)`` selects every record whose value
    did not decode, also one whose publisher stated its type in ``clinic.event-type``.
    """

    error_classes: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    event_ids: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    #: Exactly these DLQ records, as (partition, offset): what a review page group held
    #: when the operator confirmed its replay, so records arriving meanwhile are left alone.
    records: frozenset[tuple[int, int]] = frozenset()

    def __post_init__(self) -> None:
        if self.partition is None and (self.from_offset, self.to_offset) != (None, None):
            raise DlqFilterError("--from-offset / --to-offset need --partition")
        for name in ("partition", "from_offset", "to_offset"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise DlqFilterError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        first, last = self.from_offset, self.to_offset
        if first is not None and last is not None and first > last:
            raise DlqFilterError("--from-offset must not be after --to-offset")
        if self.since_ms is not None and self.until_ms is not None \
                and self.since_ms > self.until_ms:
            raise DlqFilterError("--since must not be after --until")

    def matches(self, record: DlqRecord) -> bool:
        stamp, cls = record.timestamp_ms, record.error_class
        return all((
            self.partition is None or record.partition == self.partition,
            self.from_offset is None or record.offset >= self.from_offset,
            self.to_offset is None or record.offset <= self.to_offset,
            self.since_ms is None or (stamp is not None and stamp >= self.since_ms),
            self.until_ms is None or (stamp is not None and stamp <= self.until_ms),
            not self.event_types or record.event_type in self.event_types
            or (record.event is None and UNDECODABLE in self.event_types),
            not self.event_ids or record.event_id in self.event_ids,
            not self.records or (record.partition, record.offset) in self.records,
            not self.error_classes or any(
                cls == wanted or cls.endswith("." + wanted)
                or (wanted in ("parked", PARKED) and record.parked_behind is not None)
                for wanted in self.error_classes),
        ))

    def describe(self) -> dict[str, Any]:
        """The criteria that are set, JSON-ready (for output and the audit record)."""
        described: dict[str, Any] = {}
        for name, value in ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)):
            if isinstance(value, frozenset) and value:
                described[name] = sorted(value)
            elif value is not None and not isinstance(value, frozenset):
                described[name] = iso(value) if name.endswith("_ms") else value
        return described


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """DLQ offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    partition: int
    start: int
    end: int


def check_partition(flt: DlqFilter, topic: str, partitions: Collection[int]) -> None:
    """Refuse a filter partition the DLQ topic does not have.

    Reading a partition that does not exist finds no records, which would look like an empty
    DLQ; Kafka numbers a topic's partitions 0..N-1.
    """
    if flt.partition is None or flt.partition in partitions:
        return
    count = len(partitions)
    numbers = "0" if count == 1 else f"0..{count - 1}"
    raise DlqFilterError(
        f"--partition {flt.partition}: the DLQ topic {topic} has {count} "
        f"partition{'' if count == 1 else 's'} ({numbers})")


def plan_ranges(watermarks: Mapping[int, tuple[int, int]], flt: DlqFilter) -> list[OffsetRange]:
    """Offsets to read: from the low to the high watermark, narrowed by the filter's
    partition and offsets; empty ranges are left out.

    Always from the low watermark: which records are done is the ledger's business, not a
    position's, so no run ever passes over a record it did not resolve.
    """
    ranges = []
    for partition, (low, high) in sorted(watermarks.items()):
        if flt.partition is not None and partition != flt.partition:
            continue
        start = max(low, flt.from_offset or 0)
        end = high if flt.to_offset is None else min(high, flt.to_offset + 1)
        if start < end:
            ranges.append(OffsetRange(partition, start, end))
    return ranges


def iso(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC (``2026-11-29T08:00:00.000Z``)."""
    if epoch_ms is None:
        return None
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_event(value: Any) -> Any:
    """A copy of a JSON event with every patient-identifying field replaced by ``****``."""
    if isinstance(value, Mapping):
        return {key: (MASK if key in PATIENT_IDENTIFYING_FIELDS and inner is not None
                      else mask_event(inner)) for key, inner in value.items()}
    if isinstance(value, list):
        return [mask_event(inner) for inner in value]
    return value


def key_text(key: bytes | None) -> str | None:
    """A record key for people: its text if it is printable UTF-8, else its bytes in hex,
    marked as such (``hex 00ff (not printable UTF-8)``), so it can be read byte for byte."""
    if key is None:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return text
    return f"hex {key.hex()} (not printable UTF-8)"


def record_view(record: DlqRecord, *, reveal: bool = False) -> dict[str, Any]:
    """Everything ``dlq show`` prints about a record, JSON-ready, masked unless ``reveal``.

    ``key`` is the key as text when it is valid UTF-8 (else None), ``key_hex`` its exact
    bytes; the key is an entity id, not PHI.
    """
    h = record.headers
    view: dict[str, Any] = {
        "dlq_partition": record.partition, "dlq_offset": record.offset,
        "dlq_timestamp": iso(record.timestamp_ms),
        "key": _utf8(record.key), "key_hex": record.key.hex() if record.key is not None else None,
        "event_id": record.event_id, "event_type": record.event_type,
        "original": {"topic": h.original_topic, "partition": h.original_partition,
                     "offset": h.original_offset, "timestamp": iso(h.original_timestamp_ms)},
        "attempts": h.attempts, "first_failure_at": iso(h.first_failure_at_ms),
        "last_failure_at": iso(h.last_failure_at_ms), "error_class": h.error_class,
        "error_message": h.error_message, "classification": h.classification,
        "dlq_reason": h.dlq_reason, "parked_behind": record.parked_behind,
        "replay_count": h.replay_count or 0,
        "traceparent": h.traceparent, "status": record.status,
    }
    if record.resolution is not None:
        view["resolution"] = record.resolution.view()
    if record.header_problem:
        view["header_problem"] = record.header_problem
    if record.event is not None:
        event = event_to_json(record.event)
        view["event"] = event if reveal else mask_event(event)
    else:  # the bytes may hold PHI too: their length and a short prefix only
        raw = record.value or b""
        view["undecodable"] = {"reason": record.decode_problem, "length": len(raw),
                               **({"hex": raw.hex()} if reveal
                                  else {"hex_prefix": raw[:RAW_PREFIX_BYTES].hex()})}
    return view


def _utf8(raw: bytes | None) -> str | None:
    try:
        return raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        return None


@dataclass(slots=True, kw_only=True)
class DlqGroup:
    """DLQ records sharing an error class and an event type: how many (``open`` of them),
    oldest, newest. Parked dead letters are grouped under :data:`PARKED`, with the events
    they wait behind (``parked_behind``)."""

    error_class: str
    event_type: str
    count: int = 0
    open: int = 0
    oldest_ms: int | None = None
    newest_ms: int | None = None
    parked_behind: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        """The error class for people: ``parked (behind 2 heads)`` for parked records."""
        if self.error_class != PARKED:
            return self.error_class
        heads = len(self.parked_behind)
        return f"parked (behind {heads} head{'' if heads == 1 else 's'})"


@dataclass(slots=True)
class DlqSummary:
    """Counts DLQ records by (error class, event type) as they stream past.

    Resolved records are counted only with ``include_resolved``; ``statuses`` counts every
    record offered, so a listing of open records can say how many resolved ones it left out.
    """

    include_resolved: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    _groups: dict[tuple[str, str], DlqGroup] = field(default_factory=dict)
    _discarded: set[str] = field(default_factory=set)  # event ids of discarded records

    def add(self, record: DlqRecord) -> None:
        self.statuses[record.status] = self.statuses.get(record.status, 0) + 1
        if record.status == "discarded" and record.event_id is not None:
            self._discarded.add(record.event_id)
        if record.resolution is not None and not self.include_resolved:
            return
        behind = record.parked_behind
        key = (PARKED if behind is not None else record.error_class, record.event_type)
        group = self._groups.setdefault(key, DlqGroup(error_class=key[0], event_type=key[1]))
        if behind is not None:
            group.parked_behind.add(behind)
        group.count += 1
        group.open += record.resolution is None
        if (stamp := record.timestamp_ms) is not None:
            group.oldest_ms = stamp if group.oldest_ms is None else min(group.oldest_ms, stamp)
            group.newest_ms = stamp if group.newest_ms is None else max(group.newest_ms, stamp)

    @property
    def total(self) -> int:
        return sum(group.count for group in self._groups.values())

    def heads(self) -> tuple[list[str], list[str]]:
        """The events parked dead letters wait behind: (still held, discarded since).

        A discarded head holds its key no more: the first of its parked followers is the
        key's head now, waiting for its own replay or discard. A head this scan did not see
        (filtered out) counts as held.
        """
        named = {head for group in self._groups.values() for head in group.parked_behind}
        return sorted(named - self._discarded), sorted(named & self._discarded)

    @property
    def resolved_left_out(self) -> int:
        """Resolved records offered but not counted (0 with ``include_resolved``)."""
        if self.include_resolved:
            return 0
        return sum(n for status, n in self.statuses.items() if status != OPEN)

    def groups(self) -> list[DlqGroup]:
        """Largest groups first, then by error class and event type."""
        return sorted(self._groups.values(), key=lambda g: (-g.count, g.error_class, g.event_type))


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """Republish ``value`` under ``key`` to ``topic`` with ``headers``; ``follows`` is the
    replayed event a parked dead letter is taken along behind (it matched no filter)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    forced: bool = False
    follows: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Skip:
    """Do not replay the record, because of ``reason``; it stays open."""

    reason: SkipReason
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Discard:
    """Mark the record resolved without replaying it, because of ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class AlreadyResolved:
    """The ledger says the record was replayed or discarded already: leave it alone."""

    resolution: Resolution


def decide_replay(
    record: DlqRecord, *, target: str | None, max_replays: int,
    outcome: Outcome | None, force: bool,
) -> Replay | Skip | AlreadyResolved:
    """Replay ``record`` to ``target`` (else its original topic), or say why not.

    A resolved record is never replayed again, not even with ``force``: that is what makes a
    replay exactly once per DLQ record. ``outcome`` is what the dedup store recorded for the
    record's event id. ``force`` replays an open record anyway when the event is recorded as
    delivered (marking it so the consumer delivers it) or when it came back to the DLQ after
    ``max_replays`` replays. The headers are reset by :func:`retry_topics.hops.replay_headers`.
    """
    if record.resolution is not None:
        return AlreadyResolved(record.resolution)
    if record.header_problem is not None:
        return Skip(reason="malformed-headers", detail=record.header_problem)
    replays = record.headers.replay_count or 0
    if replays >= max_replays and not force:
        return Skip(reason="max-replays",
                    detail=f"replayed {replays} times already (max {max_replays}; "
                           "discard it, or replay it with --force)")
    if outcome == "delivered" and not force:
        return Skip(reason="already-delivered",
                    detail=f"event {record.event_id} is recorded as delivered (discard it, "
                           "or replay it with --force)")
    topic = target or record.headers.original_topic
    if not topic:
        return Skip(reason="no-target", detail="no clinic.original-topic header (use --to)")
    return Replay(topic=topic, key=record.key, value=record.value, forced=force,
                  headers=encode_headers(replay_headers(record.headers, force=force)))


def decide_discard(record: DlqRecord, *, reason: str) -> Discard | AlreadyResolved:
    """Discard ``record`` for ``reason``, unless it is resolved already."""
    if record.resolution is not None:
        return AlreadyResolved(record.resolution)
    return Discard(reason=reason)


Decision = Replay | Skip | Discard | AlreadyResolved | None
"""What a run did with one examined record; ``None``: it did not match the filter."""


@dataclass(slots=True)
class DlqTally:
    """How many DLQ records a replay or discard examined, and what became of them.

    ``skipped`` counts open records a replay left open, by reason; ``already_resolved``
    counts matching records the ledger had as replayed or discarded before;
    ``parked_followers`` how many of the replayed records were parked dead letters taken
    along behind a replayed event.
    """

    examined: int = 0
    not_matching: int = 0
    already_resolved: int = 0
    replayed: int = 0
    discarded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    parked_followers: int = 0

    def count(self, decision: Decision) -> None:
        """Count one examined record."""
        self.examined += 1
        if decision is None:
            self.not_matching += 1
        elif isinstance(decision, AlreadyResolved):
            self.already_resolved += 1
        elif isinstance(decision, Replay):
            self.replayed += 1
            self.parked_followers += decision.follows is not None
        elif isinstance(decision, Discard):
            self.discarded += 1
        else:
            self.skipped[decision.reason] = self.skipped.get(decision.reason, 0) + 1

    def as_dict(self, action: Literal["replay", "discard"] = "replay") -> dict[str, Any]:
        """The counts of a replay (``replayed``, ``skipped``) or a discard (``discarded``)."""
        counts: dict[str, Any] = {"examined": self.examined, "not_matching": self.not_matching,
                                  "already_resolved": self.already_resolved}
        if action == "replay":
            counts.update(replayed=self.replayed, parked_followers=self.parked_followers,
                          skipped=dict(sorted(self.skipped.items())))
        else:
            counts["discarded"] = self.discarded
        return counts
