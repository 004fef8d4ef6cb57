"""The review page's status band: one line of what ``lag`` would say, from its report.

Shows the worst status (OK / WARN / ERR / STOP) with the reasons behind it, the retry
records waiting for their due time and those overdue, and what the running instances say of
the downstream (breaker: outage) and of their dead letters (flood guard: halted), and the
parked keys the dedup store counts (``parked``; None when ordering is off or the store could
not say: the page shows "n/a").
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer.ops.lag.model import GroupReport, Status

MAX_REASONS = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusBand:
    status: str
    reasons: tuple[str, ...]
    waiting: int
    overdue: int
    members: int
    downstream: str  # "available" or "unavailable" (the breaker of some instance is open)
    flood_guard: str  # "running" or "halted"
    taken_at_ms: int
    parked: int | None = None


def status_band(report: GroupReport) -> StatusBand:
    """The band of ``report``: its system reasons first, then the topics' reasons."""
    reasons = list(report.system_reasons)
    for topic in report.topics:
        if topic.status > Status.OK or (topic.kind == "dlq" and topic.reasons):
            reasons.extend(f"{topic.topic}: {reason}" for reason in topic.reasons)
    retry = [t for t in report.topics if t.kind == "retry"]
    system = " ".join(report.system_reasons)
    return StatusBand(
        status=report.status.name, reasons=tuple(reasons[:MAX_REASONS]),
        waiting=sum(t.waiting for t in retry), overdue=sum(t.overdue for t in retry),
        members=report.members,
        downstream="unavailable" if "downstream unavailable" in system else "available",
        flood_guard="halted" if "dead letters halted" in system else "running",
        taken_at_ms=report.taken_at_ms)
