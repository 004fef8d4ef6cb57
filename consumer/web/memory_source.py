"""An in-memory :class:`~consumer.web.source.ReviewSource`, for tests of the pages.

It resolves records the way the Kafka one does, as far as the page can tell: a replayed or
discarded record leaves the open list, each action appends one audit record, and a record
resolved before is counted as ``already_resolved``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from consumer.ops.dlq.ledger import Resolution, ResolutionStatus
from consumer.ops.dlq.model import DlqRecord
from consumer.ops.lag.band import StatusBand
from consumer.web.source import ActionResult, Coordinates, reveal_audit
from retry_topics.headers import RecordHeaders


class MemoryReviewSource:
    def __init__(self, records: list[DlqRecord], *, band: StatusBand | None = None,
                 main: str = "clinic.events", tiers: tuple[str, ...] = ()) -> None:
        self.topics = {"main": main, "dlq": f"{main}.dlq", "ledger": f"{main}.dlq-ledger",
                       "audit": f"{main}.audit"}
        self.tiers = list(tiers)
        self.records = {(r.partition, r.offset): r for r in records}
        self.audit: list[dict[str, Any]] = []
        self.replayed: list[DlqRecord] = []
        self.band = band
        self.hop_headers: dict[tuple[int, int], list[tuple[str, RecordHeaders]]] = {}

    def open_records(self) -> list[DlqRecord]:
        return [r for r in self.records.values() if r.resolution is None]

    def record(self, partition: int, offset: int) -> DlqRecord | None:
        return self.records.get((partition, offset))

    def hops(self, record: DlqRecord) -> list[tuple[str, RecordHeaders]]:
        return self.hop_headers.get((record.partition, record.offset), [])

    def status(self) -> StatusBand | None:
        return self.band

    def audit_trail(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(reversed(self.audit))[:limit]

    def _resolve(self, action: str, records: Coordinates, actor: str,
                 reason: str | None) -> ActionResult:
        done = already = 0
        for key in sorted(records):
            record = self.records.get(key)
            if record is None:
                continue
            if record.resolution is not None:
                already += 1
                continue
            status: ResolutionStatus = "replayed" if action == "replay" else "discarded"
            self.records[key] = dataclasses.replace(
                record, resolution=Resolution(status=status, actor=actor, reason=reason))
            if action == "replay":
                self.replayed.append(record)
            done += 1
        counts = {"examined": done + already, "already_resolved": already,
                  ("replayed" if action == "replay" else "discarded"): done}
        self.audit.append({"action": f"dlq.{action}", "actor": actor, "reason": reason,
                           "finished_at": f"2026-01-01T00:00:{len(self.audit):02d}.000Z",
                           "outcome": "completed", "counts": counts})
        return ActionResult(action=action, outcome="completed", counts=counts, audited=True)

    def replay(self, records: Coordinates, actor: str) -> ActionResult:
        return self._resolve("replay", records, actor, None)

    def discard(self, records: Coordinates, reason: str, actor: str) -> ActionResult:
        return self._resolve("discard", records, actor, reason)

    def audit_reveal(self, record: DlqRecord, actor: str, why: str) -> None:
        self.audit.append(reveal_audit(self.topics, record, actor, why))
