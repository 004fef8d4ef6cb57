"""The review page's view of the dead letters, decided without Kafka.

Operations staff read reasons, not exception classes. :func:`plain_reason` turns a dead
letter's headers (its ``clinic.dlq-reason``, error class and attempt count) into a sentence
such as "EHR rejected the request: 422 Unprocessable Entity" or "gave up after 4 attempts:
EHR unavailable (503)", with a short stable ``key`` for links and filters. The sentence is
built from the error *class* and the status code only, never from the error message, so it
holds no PHI and may go into a URL.

:class:`ReviewFilter` narrows the open records by reason, event type, clinic and time (all
non-PHI); :func:`group_records` groups them by (reason, event type, clinic) with counts and
the oldest and newest time. :func:`journey` lays out one record's attempts from the hops
found in the retry tiers plus the dead letter itself, and :func:`trace_id` takes the trace id
out of a ``traceparent`` for the trace viewer's link.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

from consumer.ops.dlq.model import UNDECODABLE, DlqFilterError, DlqRecord
from retry_topics.headers import RecordHeaders

UNKNOWN_CLINIC = "(unknown)"
#: A dead letter that did not fail: an earlier event of its key (its appointment, its
#: intake) is in the DLQ, and order is kept (``[ordering] after_dead_letter = "hold"``).
PARKED_TEXT = "held behind an earlier dead letter of the same key: replay or discard that one first"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REASON_KEY = re.compile(r"^[A-Za-z0-9_.:()-]{1,200}$")


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a record was dead-lettered: ``key`` for URLs and filters, ``text`` for people."""

    key: str
    text: str


def _status_phrase(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _failure(error_class: str, downstream: str) -> str:
    """What a transient failure was, in plain words."""
    if error_class.startswith("http.") and error_class[5:].isdigit():
        code = int(error_class[5:])
        words = {429: f"{downstream} asked to slow down", 502: f"{downstream} gateway failed",
                 503: f"{downstream} unavailable", 504: f"{downstream} gateway timed out"}
        if code in words:
            return f"{words[code]} ({code})"
        return f"{downstream} answered {_status_phrase(code)}"
    if error_class == "timeout":
        return f"{downstream} did not answer in time"
    if error_class == "connection":
        return f"could not connect to {downstream}"
    return f"handler failed ({error_class.rsplit('.', 1)[-1]})"


def plain_reason(record: DlqRecord, downstream: str = "EHR") -> Reason:
    """Why ``record`` is in the DLQ, in plain words (see the module docstring)."""
    h = record.headers
    cls = h.error_class or ""
    if h.dlq_reason == "parked" or h.parked_behind is not None:
        return Reason("parked", PARKED_TEXT)
    if h.dlq_reason == "undecodable" or (record.event is None and not cls):
        return Reason("undecodable", "undecodable record")
    if h.dlq_reason == "exhausted":
        attempts = h.attempts or 0
        return Reason(f"exhausted:{cls}:{attempts}",
                      f"gave up after {attempts} attempts: {_failure(cls, downstream)}")
    if cls.startswith("http.") and cls[5:].isdigit():
        return Reason(f"permanent:{cls}",
                      f"{downstream} rejected the request: {_status_phrase(int(cls[5:]))}")
    if cls:
        return Reason(f"permanent:{cls}",
                      f"handler refused the event ({cls.rsplit('.', 1)[-1]})")
    return Reason("unknown", "no reason recorded")


def clinic_of(record: DlqRecord) -> str:
    """The clinic id of the record's event (not PHI: it names a clinic), if decodable."""
    if record.event is None:
        return UNKNOWN_CLINIC
    return str(record.event.get("clinic_id") or UNKNOWN_CLINIC)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewFilter:
    """Which open records the review page shows: every set criterion must match."""

    reason: str | None = None
    event_type: str | None = None
    clinic: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        if self.reason is not None and not _REASON_KEY.match(self.reason):
            raise DlqFilterError(f"not a reason key: {self.reason!r}")
        if self.since_ms is not None and self.until_ms is not None \
                and self.since_ms > self.until_ms:
            raise DlqFilterError("'from' must not be after 'to'")

    def matches(self, record: DlqRecord, downstream: str = "EHR") -> bool:
        stamp = record.timestamp_ms
        return all((
            self.reason is None or plain_reason(record, downstream).key == self.reason,
            self.event_type is None or record.event_type == self.event_type,
            self.clinic is None or clinic_of(record) == self.clinic,
            self.since_ms is None or (stamp is not None and stamp >= self.since_ms),
            self.until_ms is None or (stamp is not None and stamp <= self.until_ms),
        ))


@dataclass(slots=True, kw_only=True)
class ReviewGroup:
    """Open records sharing a reason, an event type and a clinic."""

    reason: Reason
    event_type: str
    clinic: str
    count: int = 0
    oldest_ms: int | None = None
    newest_ms: int | None = None
    records: list[tuple[int, int]] = field(default_factory=list)  # DLQ (partition, offset)

    def add(self, record: DlqRecord) -> None:
        self.count += 1
        self.records.append((record.partition, record.offset))
        if (stamp := record.timestamp_ms) is not None:
            self.oldest_ms = stamp if self.oldest_ms is None else min(self.oldest_ms, stamp)
            self.newest_ms = stamp if self.newest_ms is None else max(self.newest_ms, stamp)

    @property
    def filter(self) -> ReviewFilter:
        """The filter that selects exactly this group (for its links)."""
        return ReviewFilter(reason=self.reason.key, event_type=self.event_type,
                            clinic=self.clinic)


def group_records(records: Iterable[DlqRecord], downstream: str = "EHR") -> list[ReviewGroup]:
    """Open records grouped by (reason, event type, clinic), largest group first."""
    groups: dict[tuple[str, str, str], ReviewGroup] = {}
    for record in records:
        if record.resolution is not None:
            continue
        reason = plain_reason(record, downstream)
        key = (reason.key, record.event_type, clinic_of(record))
        groups.setdefault(key, ReviewGroup(reason=reason, event_type=key[1],
                                           clinic=key[2])).add(record)
    return sorted(groups.values(),
                  key=lambda g: (-g.count, g.reason.text, g.event_type, g.clinic))


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (None if absent or malformed)."""
    found = _TRACEPARENT.match((traceparent or "").strip().lower())
    return found.group(1) if found else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One attempt of a record's journey: when it failed, where it ran, what became of it."""

    number: int
    at_ms: int | None
    ran_in: str  # the main topic or a retry tier topic
    outcome: str
    trace_id: str | None


def _ran_in(attempt: int, main: str, tiers: Sequence[str]) -> str:
    """Attempt 1 runs off the main topic, attempt k off retry tier k - 1."""
    if attempt <= 1:
        return main
    return tiers[attempt - 2] if attempt - 2 < len(tiers) else f"retry tier {attempt - 1}"


def journey(record: DlqRecord, hops: Iterable[tuple[str, RecordHeaders]], *, main: str,
            tiers: Sequence[str], dlq_topic: str, downstream: str = "EHR") -> list[Attempt]:
    """The attempts of ``record``, oldest first: one per retry-tier hop still held by its
    tier (``hops``: (tier topic, headers) of records with the same original coordinates),
    then the attempt that dead-lettered it."""
    attempts: dict[int, Attempt] = {}
    for topic, headers in hops:
        number = headers.attempts or 0
        if number < 1 or (headers.replay_count or 0) != (record.headers.replay_count or 0):
            continue  # not a hop of this record's latest journey
        attempts[number] = Attempt(
            number=number, at_ms=headers.last_failure_at_ms,
            ran_in=_ran_in(number, main, tiers),
            outcome=f"failed: {_failure(headers.error_class or '', downstream)}; "
                    f"retried via {topic}",
            trace_id=trace_id(headers.traceparent))
    h = record.headers
    last = h.attempts or 1
    reason = plain_reason(record, downstream)
    if h.dlq_reason == "undecodable" or reason.key == "undecodable":
        outcome = f"dead-lettered to {dlq_topic}: undecodable record"
    else:
        outcome = f"dead-lettered to {dlq_topic}: {reason.text}"
    attempts[last] = Attempt(number=last, at_ms=h.last_failure_at_ms or record.timestamp_ms,
                             ran_in=_ran_in(last, main, tiers), outcome=outcome,
                             trace_id=trace_id(h.traceparent))
    return [attempts[n] for n in sorted(attempts)]


__all__ = [
    "UNDECODABLE", "UNKNOWN_CLINIC", "Attempt", "Reason", "ReviewFilter", "ReviewGroup",
    "clinic_of", "group_records", "journey", "plain_reason", "trace_id",
]
