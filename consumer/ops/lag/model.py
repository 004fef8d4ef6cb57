"""Consumer-group lag as values, and its evaluation into OK / WARN / ERR / STOP.

Why a separate, pure module: the verdict an operator (or cron, or a monitoring system) acts on
must be explainable and testable without a broker. ``consumer.kafka.lag_probe`` gathers one
:class:`GroupSample` from Kafka; :func:`evaluate` turns it, plus earlier samples taken within
the window (:mod:`consumer.ops.lag.history`), into a :class:`GroupReport`.

Lag of a partition (what ``kafka-consumer-groups --describe`` shows): ``end - committed``.
A partition the group never committed counts from its **beginning** (low watermark): every
record still held is unconsumed. For the dead-letter topic nothing is "consumed"; its lag is
the number of records it holds, ``end - beginning``.

Rules, in the spirit of Burrow (statuses ordered OK < WARN < ERR < STOP; worst wins):

* **OK** - no lag, or lag that is being worked off.
* **WARN** - lag grew over the window: every sample in the window has lag, the lag never
  fell from one sample to the next and ended higher than it started. The DLQ holds open
  dead letters (neither replayed nor discarded; where the ledger cannot be read, any record).
  A topic does not exist.
* **ERR** - a retry-topic record is overdue (its ``clinic.due-at`` passed) by more than the
  grace period (default 30 s: the tier consumer resumes a paused partition exactly at the due
  time, so anything later than a few polls means it is not keeping up). A main-topic
  partition is **stalled**: lag > 0 and the committed offset did not move in any sample.
  Both are only WARN while a ``run`` instance states an outage that is itself still WARN:
  it holds every partition on purpose then.
* **STOP** - the group has no members while a main or retry topic has lag: nobody consumes.

Growth and stall need samples that span at least half the window, so two runs a second apart
never produce a verdict from noise. Retry topics are exempt from the stall rule: a consumer
correctly waits (and commits nothing) while the head of a tier is not yet due; the overdue
rule is what detects a stuck tier.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from itertools import pairwise
from typing import Any, Literal

from retry_topics.system_state import RECOVERED, SystemState

TopicKind = Literal["main", "retry", "dlq"]
PartitionKey = tuple[str, int]


class Status(IntEnum):
    """Verdicts, worst last; the value is the exit code of ``clinic-events lag``."""

    OK = 0
    WARN = 1
    ERR = 2
    STOP = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionSample:
    """Offsets of one partition and what the records after the committed offset say."""

    partition: int
    committed: int | None
    beginning: int
    end: int
    oldest_timestamp_ms: int | None = None  # record at the committed offset (DLQ: beginning)
    waiting: int = 0  # retry topics: scanned records whose due time is in the future
    overdue: int = 0  # retry topics: scanned records whose due time has passed
    oldest_due_at_ms: int | None = None  # earliest due time among the overdue records
    capped: bool = False  # the scan stopped at the per-partition cap
    # retry topics and the DLQ: the records after the start, where the scan read them all.
    # Transaction markers (exactly-once hops, replays) take offsets but hold no record, so
    # ``end - start`` overstates what a partition holds; this does not.
    records: int | None = None
    # DLQ: the records neither replayed nor discarded (the DLQ ledger's view), where both
    # the partition and the ledger were read; a resolved dead letter stays until retention.
    open: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSample:
    topic: str
    kind: TopicKind
    exists: bool = True
    partitions: tuple[PartitionSample, ...] = ()
    configured: bool = True  # False: a retry tier of delays no longer configured (drained)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSample:
    """Everything read from Kafka at one instant (``taken_at_ms``, epoch ms)."""

    group: str
    taken_at_ms: int
    members: int
    topics: tuple[TopicSample, ...]
    system: tuple[SystemState, ...] = ()  # what each run instance stated of itself


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPoint:
    """The part of an earlier sample the rules compare with: (committed, lag) per partition."""

    taken_at_ms: int
    offsets: Mapping[PartitionKey, tuple[int | None, int]]


@dataclass(frozen=True, slots=True, kw_only=True)
class LagRules:
    window_ms: int = 300_000
    grace_ms: int = 30_000
    outage_error_ms: int = 900_000  # a downstream down this long is ERR, not WARN

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.grace_ms < 0:
            raise ValueError("window must be positive and grace not negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionReport:
    partition: int
    committed: int | None
    beginning: int
    end: int
    lag: int
    time_lag_ms: int | None
    waiting: int
    overdue: int
    max_overdue_ms: int | None
    capped: bool
    status: Status
    reasons: tuple[str, ...] = ()
    open: int | None = None  # DLQ: see ``PartitionSample.open``


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicReport:
    topic: str
    kind: TopicKind
    exists: bool
    status: Status
    reasons: tuple[str, ...]
    partitions: tuple[PartitionReport, ...]
    configured: bool = True  # False: a retry tier of delays no longer configured (drained)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def waiting(self) -> int:
        return sum(p.waiting for p in self.partitions)

    @property
    def open(self) -> int | None:
        """DLQ: open dead letters across partitions, if every partition's count is known."""
        counts = [p.open for p in self.partitions]
        return None if None in counts else sum(c for c in counts if c is not None)

    @property
    def overdue(self) -> int:
        return sum(p.overdue for p in self.partitions)

    @property
    def max_time_lag_ms(self) -> int | None:
        return _max(p.time_lag_ms for p in self.partitions)

    @property
    def max_overdue_ms(self) -> int | None:
        return _max(p.max_overdue_ms for p in self.partitions)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupReport:
    group: str
    taken_at_ms: int
    members: int
    topics: tuple[TopicReport, ...]
    system_status: Status = Status.OK  # the run instances' own word: outage, halt
    system_reasons: tuple[str, ...] = ()
    status: Status = field(init=False)

    def __post_init__(self) -> None:
        worst = max((t.status for t in self.topics), default=Status.OK)
        object.__setattr__(self, "status", max(worst, self.system_status))


def _max(values: Any) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def partition_lag(kind: TopicKind, sample: PartitionSample) -> int:
    """Unconsumed records (DLQ: records held); no committed offset counts from the beginning.

    The records the scan counted where it read them all, else the offsets between.
    """
    if sample.records is not None:
        return sample.records
    start = sample.beginning if kind == "dlq" or sample.committed is None else sample.committed
    return max(0, sample.end - start)


def to_history_point(sample: GroupSample) -> HistoryPoint:
    offsets = {(t.topic, p.partition): (p.committed, partition_lag(t.kind, p))
               for t in sample.topics for p in t.partitions}
    return HistoryPoint(taken_at_ms=sample.taken_at_ms, offsets=offsets)


def evaluate(sample: GroupSample, history: Sequence[HistoryPoint], rules: LagRules) -> GroupReport:
    """Judge ``sample`` against the earlier points of ``history`` that fall within the window."""
    since = sample.taken_at_ms - rules.window_ms
    earlier = sorted((h for h in history if since <= h.taken_at_ms < sample.taken_at_ms),
                     key=lambda h: h.taken_at_ms)
    held = _outage_hold(sample, rules)
    topics = tuple(_evaluate_topic(sample, topic, earlier, rules, held)
                   for topic in sample.topics)
    system_status, system_reasons = _evaluate_system(sample, rules)
    return GroupReport(group=sample.group, taken_at_ms=sample.taken_at_ms,
                       members=sample.members, topics=topics, system_status=system_status,
                       system_reasons=system_reasons)


def _evaluate_system(sample: GroupSample, rules: LagRules) -> tuple[Status, tuple[str, ...]]:
    """What the running instances say of their downstream and their dead letters.

    Halted dead letters are STOP (nothing moves until an operator acts); a downstream down
    is WARN, and ERR once it has been down for ``outage_error_ms``. States not restated
    lately belong to instances that are gone and are left out.
    """
    now = sample.taken_at_ms
    status, reasons = Status.OK, []
    for state in sorted(sample.system, key=lambda s: s.instance):
        if not state.current(now):
            continue
        # the instance's own count: events it took in and holds, not the backlog in Kafka
        waiting = f"; {state.waiting} event(s) held in memory" if state.waiting else ""
        if state.condition == "halted":
            status = Status.STOP
            reasons.append(f"{state.instance}: dead letters halted: {state.reason}{waiting}")
        else:
            status = max(status, Status.ERR if _down_too_long(state, now, rules)
                         else Status.WARN)
            since = time.strftime("%H:%M", time.localtime(state.since_ms / 1000))
            reasons.append(f"{state.instance}: downstream unavailable since {since} "
                           f"({state.reason}){waiting}")
    return status, tuple(reasons)


def _outage_hold(sample: GroupSample, rules: LagRules) -> str:
    """Why tier records past their due time and a main partition whose offset does not move
    are an outage's doing, not a consumer falling behind ("" when they are not).

    While a running instance holds every partition for an outage that is still a WARN, they
    are WARN like the outage itself, and ERR with it once it has lasted ``outage_error_ms``.
    For ``grace_ms`` after an outage ended they stay WARN: what it held is being delivered
    (a sample taken then saw tier records a minute past due, ERR, going on that second).
    """
    now = sample.taken_at_ms
    if any(state.current(now) and state.condition == "outage"
           and not _down_too_long(state, now, rules) for state in sample.system):
        return " (held while the downstream is unavailable)"
    ended = [state.since_ms for state in sample.system
             if state.condition == "ok" and state.reason == RECOVERED
             and 0 <= now - state.since_ms <= rules.grace_ms]
    if ended:
        return (f" (held through an outage that ended {(now - max(ended)) // 1000}s ago; "
                "going on)")
    return ""


def _down_too_long(state: SystemState, now_ms: int, rules: LagRules) -> bool:
    """An outage stated by ``state`` has lasted ``outage_error_ms``: it is ERR, not WARN."""
    return now_ms - state.since_ms >= rules.outage_error_ms


def _evaluate_topic(sample: GroupSample, topic: TopicSample, earlier: Sequence[HistoryPoint],
                    rules: LagRules, held: str) -> TopicReport:
    parts = tuple(_evaluate_partition(sample.taken_at_ms, topic, p, earlier, rules, held)
                  for p in topic.partitions)
    status = max((p.status for p in parts), default=Status.OK)
    reasons: list[str] = []
    total = sum(p.lag for p in parts)
    if not topic.exists:
        status = max(status, Status.WARN)
        reasons.append("topic does not exist")
    elif topic.kind == "dlq":
        opened = [p.open for p in parts]
        if total > 0 and None not in opened:
            still = sum(o for o in opened if o is not None)
            if still:
                status = max(status, Status.WARN)
                reasons.append(f"holds {total} dead letter(s), {still} open (neither "
                               "replayed nor discarded)")
            else:
                reasons.append(f"holds {total} dead letter(s), none open (all replayed or "
                               "discarded)")
        elif total > 0:
            status = max(status, Status.WARN)
            reasons.append(f"holds {total} dead-lettered record(s)")
    elif total > 0 and sample.members == 0:
        status = Status.STOP
        reasons.append(f"group has no members while {total} record(s) wait")
        # each partition whose records wait is stopped too: its row must not read OK
        parts = tuple(replace(p, status=Status.STOP) if p.lag > 0 else p for p in parts)
    if not topic.configured:  # drained by run, like a tier (overdue and STOP rules apply)
        reasons.insert(0, "not in [retry] delays: run consumes it until the topic is deleted"
                       if total else "not in [retry] delays, and empty: delete the topic")
    reasons.extend(f"p{p.partition}: {reason}" for p in parts for reason in p.reasons)
    return TopicReport(topic=topic.topic, kind=topic.kind, exists=topic.exists, status=status,
                       reasons=tuple(reasons), partitions=parts, configured=topic.configured)


def _evaluate_partition(now_ms: int, topic: TopicSample, part: PartitionSample,
                        earlier: Sequence[HistoryPoint], rules: LagRules,
                        held: str) -> PartitionReport:
    """``held``: why an outage explains what does not move, or "" (``_outage_hold``)."""
    lag = partition_lag(topic.kind, part)
    time_lag = (max(0, now_ms - part.oldest_timestamp_ms)
                if lag > 0 and part.oldest_timestamp_ms is not None else None)
    max_overdue = (max(0, now_ms - part.oldest_due_at_ms)
                   if part.overdue and part.oldest_due_at_ms is not None else None)
    worst, because = (Status.WARN if held else Status.ERR), held
    status, reasons = Status.OK, []
    if topic.kind == "retry" and max_overdue is not None and max_overdue > rules.grace_ms:
        status = worst
        reasons.append(f"{part.overdue} overdue, oldest due {max_overdue // 1000}s ago{because}")
    if topic.kind != "dlq" and lag > 0:
        series = _series(topic, part, earlier, now_ms)
        verdict = _trend(series, rules, stall_applies=topic.kind == "main")
        if verdict is not None:
            stalled = verdict[0] is Status.ERR
            status = max(status, min(verdict[0], worst))
            reasons.append(verdict[1] + (because if stalled else ""))
    return PartitionReport(
        partition=part.partition, committed=part.committed, beginning=part.beginning,
        end=part.end, lag=lag, time_lag_ms=time_lag, waiting=part.waiting, overdue=part.overdue,
        max_overdue_ms=max_overdue, capped=part.capped, status=status, reasons=tuple(reasons),
        open=part.open,
    )


def _series(topic: TopicSample, part: PartitionSample, earlier: Sequence[HistoryPoint],
            now_ms: int) -> list[tuple[int, int | None, int]]:
    """(taken_at_ms, committed, lag) for each sample that saw this partition, oldest first."""
    key = (topic.topic, part.partition)
    series: list[tuple[int, int | None, int]] = []
    for point in earlier:
        if key in point.offsets:
            committed, lag = point.offsets[key]
            series.append((point.taken_at_ms, committed, lag))
    series.append((now_ms, part.committed, partition_lag(topic.kind, part)))
    return series


def _trend(series: Sequence[tuple[int, int | None, int]], rules: LagRules,
           *, stall_applies: bool) -> tuple[Status, str] | None:
    """ERR for a stall, WARN for growth, None otherwise (see the module docstring)."""
    if len(series) < 2 or series[-1][0] - series[0][0] < rules.window_ms // 2:
        return None
    if any(lag == 0 for _, _, lag in series):
        return None
    span_s = (series[-1][0] - series[0][0]) // 1000
    committed = {c for _, c, _ in series}
    if stall_applies and len(committed) == 1:
        (offset,) = committed
        shown = "(none)" if offset is None else offset
        return Status.ERR, f"stalled: committed offset {shown} unchanged for {span_s}s"
    lags = [lag for _, _, lag in series]
    if all(b >= a for a, b in pairwise(lags)) and lags[-1] > lags[0]:
        return Status.WARN, f"lag grew from {lags[0]} to {lags[-1]} in {span_s}s"
    return None


def report_to_json(report: GroupReport) -> dict[str, Any]:
    """The stable ``--json`` document (keys are only ever added, never renamed)."""
    return {
        "group": report.group,
        "status": report.status.name,
        "taken_at_ms": report.taken_at_ms,
        "members": report.members,
        "system": {"status": report.system_status.name,
                   "reasons": list(report.system_reasons)},
        "topics": [
            {
                "topic": t.topic, "kind": t.kind, "exists": t.exists, "status": t.status.name,
                "lag": t.lag, "max_time_lag_ms": t.max_time_lag_ms, "waiting": t.waiting,
                "overdue": t.overdue, "max_overdue_ms": t.max_overdue_ms,
                "open": t.open if t.kind == "dlq" else None,
                "reasons": list(t.reasons), "configured": t.configured,
                "partitions": [
                    {"partition": p.partition, "committed": p.committed,
                     "beginning": p.beginning, "end": p.end, "lag": p.lag,
                     "time_lag_ms": p.time_lag_ms, "waiting": p.waiting, "overdue": p.overdue,
                     "max_overdue_ms": p.max_overdue_ms, "capped": p.capped,
                     "status": p.status.name, "open": p.open}
                    for p in t.partitions
                ],
            }
            for t in report.topics
        ],
    }
