"""Where the review page gets its dead letters and does its actions: the ``ReviewSource``
port, and its implementation over Kafka.

:class:`KafkaReviewSource` reads with :func:`consumer.kafka.dlq_io.scan` and resolves with
:func:`consumer.kafka.dlq_io.replay` / :func:`consumer.kafka.dlq_io.discard`, the very runs
``clinic-events dlq replay`` and ``dlq discard`` make: exactly once per dead letter, ledgered
and audited, the signed-in person named as the audit record's ``actor``. Revealing PHI
writes its own audit record. The status band is a ``lag`` sample, taken at most every
:data:`STATUS_EVERY_S` seconds, judged against the samples taken before it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from consumer.config.settings import Settings
from consumer.kafka.dlq_io import DiscardRequest, ReplayRequest, ReplayRun, discard, replay, scan
from consumer.kafka.lag_probe import LagProbe
from consumer.kafka.review_io import find_hops, read_audit, write_audit
from consumer.ops.dlq.model import DlqFilter, DlqRecord, iso
from consumer.ops.lag.band import StatusBand, status_band
from consumer.ops.lag.model import HistoryPoint, LagRules, evaluate, to_history_point
from consumer.ops.lag.parked import ParkedKeys, read_parked
from retry_topics.headers import RecordHeaders
from retry_topics.naming import audit_topic_name, dlq_ledger_topic_name, dlq_topic_name

STATUS_EVERY_S = 15.0
Coordinates = frozenset[tuple[int, int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionResult:
    """What a replay or discard from the page did: its outcome and counts."""

    action: str
    outcome: str
    counts: dict[str, Any] = field(default_factory=dict)
    audited: bool = False


class ReviewSource(Protocol):
    """What the review page needs of Kafka."""

    @property
    def topics(self) -> dict[str, str]:
        """main, dlq, ledger and audit topic names."""
        ...

    @property
    def tiers(self) -> list[str]:
        """The retry tier topics, shortest delay first."""
        ...

    def open_records(self) -> list[DlqRecord]: ...

    def record(self, partition: int, offset: int) -> DlqRecord | None: ...

    def hops(self, record: DlqRecord) -> list[tuple[str, RecordHeaders]]: ...

    def status(self) -> StatusBand | None: ...

    def audit_trail(self, limit: int = 50) -> list[dict[str, Any]]: ...

    def replay(self, records: Coordinates, actor: str) -> ActionResult: ...

    def discard(self, records: Coordinates, reason: str, actor: str) -> ActionResult: ...

    def audit_reveal(self, record: DlqRecord, actor: str, why: str) -> None: ...


def reveal_audit(topics: dict[str, str], record: DlqRecord, actor: str, why: str
                 ) -> dict[str, Any]:
    """The audit record of one reveal of a record's PHI."""
    return {"action": "dlq.reveal", "actor": actor, "why": why,
            "at": iso(time.time_ns() // 1_000_000), "dlq_topic": topics["dlq"],
            "dlq_partition": record.partition, "dlq_offset": record.offset,
            "event_id": record.event_id}


def _result(action: str, run: ReplayRun) -> ActionResult:
    return ActionResult(action=action, outcome=run.outcome,
                        counts=run.tally.as_dict("replay" if action == "replay" else "discard"),
                        audited=run.audit is not None)


class KafkaReviewSource:
    """:class:`ReviewSource` over the configured topics."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        main = settings.topics.main
        self.topics = {"main": main, "dlq": dlq_topic_name(main),
                       "ledger": dlq_ledger_topic_name(main), "audit": audit_topic_name(main)}
        self.tiers = list(settings.retry.retry_topics)
        self._lock = threading.Lock()
        self._band: StatusBand | None = None
        self._band_at = 0.0
        self._history: list[HistoryPoint] = []

    def open_records(self) -> list[DlqRecord]:
        return [r for r in scan(self._settings, self.topics["dlq"], self.topics["ledger"],
                                DlqFilter()) if r.resolution is None]

    def record(self, partition: int, offset: int) -> DlqRecord | None:
        flt = DlqFilter(partition=partition, from_offset=offset, to_offset=offset)
        return next(iter(scan(self._settings, self.topics["dlq"], self.topics["ledger"], flt)),
                    None)

    def hops(self, record: DlqRecord) -> list[tuple[str, RecordHeaders]]:
        original = record.headers.provenance
        return [] if original is None else find_hops(self._settings, original)

    def status(self) -> StatusBand | None:
        with self._lock:
            if self._band is not None and time.monotonic() - self._band_at < STATUS_EVERY_S:
                return self._band
            with LagProbe(self._settings) as probe:
                sample = probe.sample()
            report = evaluate(sample, self._history, LagRules(
                outage_error_ms=self._settings.breaker.error_after_ms))
            self._history = [*self._history, to_history_point(sample)][-100:]
            parked = read_parked(self._settings)
            band = status_band(report)
            if isinstance(parked, ParkedKeys):
                band = replace(band, parked=parked.keys)
            self._band, self._band_at = band, time.monotonic()
            return self._band

    def audit_trail(self, limit: int = 50) -> list[dict[str, Any]]:
        return read_audit(self._settings, self.topics["audit"], limit)

    def replay(self, records: Coordinates, actor: str) -> ActionResult:
        request = ReplayRequest(dlq_topic=self.topics["dlq"], ledger_topic=self.topics["ledger"],
                                audit_topic=self.topics["audit"],
                                filter=DlqFilter(records=records), actor=actor)
        return _result("replay", replay(self._settings, request))

    def discard(self, records: Coordinates, reason: str, actor: str) -> ActionResult:
        request = DiscardRequest(dlq_topic=self.topics["dlq"],
                                 ledger_topic=self.topics["ledger"],
                                 audit_topic=self.topics["audit"],
                                 filter=DlqFilter(records=records), reason=reason, actor=actor)
        return _result("discard", discard(self._settings, request))

    def audit_reveal(self, record: DlqRecord, actor: str, why: str) -> None:
        write_audit(self._settings, self.topics["audit"], self.topics["dlq"],
                    reveal_audit(self.topics, record, actor, why))
