"""Reading one lag sample of the consumer group from Kafka (the I/O half of ``lag``).

The figures must agree with Kafka's own tooling, so they come from the same APIs:
committed offsets from ``AdminClient.list_consumer_group_offsets``, beginning and end offsets
from ``AdminClient.list_offsets`` (earliest / latest), members from
``describe_consumer_groups``.

Record contents are read by a throwaway consumer that is *assigned* partitions (never
subscribed) under its own random group id, with auto-commit off: it can never join, rebalance
or move the real group's offsets. It seeks to the first unconsumed record of each lagging
partition (the committed offset, else the beginning) and reads:

* main topic: one record, whose timestamp gives the time lag;
* retry topics: every unconsumed record up to ``scan_cap`` per partition, to split them by
  their ``clinic.due-at`` header into waiting (due later) and overdue (due already; a record
  without a readable due time counts as due at its timestamp). Hitting the cap, or the scan
  deadline, marks the partition ``capped``: its waiting/overdue counts cover only the part read;
* DLQ: every record up to ``scan_cap`` per partition: the first for the age of the oldest
  dead letter, all of them for how many there are.

Retry and DLQ partitions read to their end are counted by their records, not their offsets:
transaction markers (hops and replays are written in transactions) take offsets too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer.config.settings import Settings
from consumer.errors import ClinicEventsError
from consumer.kafka.client_log import ClientLog
from consumer.kafka.clients import kafka_client, message_headers
from consumer.kafka.dlq_ledger import read_ledger
from consumer.kafka.group_offsets import GroupOffsets, leftover_tiers
from consumer.kafka.status import read_states
from consumer.ops.dlq.ledger import DlqLedger
from consumer.ops.lag.model import (
    GroupSample,
    PartitionSample,
    TopicKind,
    TopicSample,
)
from retry_topics.clock import Clock, SystemClock
from retry_topics.errors import HeaderError
from retry_topics.headers import decode_headers
from retry_topics.naming import dlq_ledger_topic_name

LOG = logging.getLogger("clinic_events.lag")
DEFAULT_SCAN_CAP = 10_000
Progress = Callable[[int, int], None]
"""Called with (records read, records to read) while the probe scans."""


@dataclass(slots=True)
class _Scan:
    """What the probe reads of one partition and what it found (mutable while scanning)."""

    kind: TopicKind
    start: int
    stop: int  # exclusive
    capped: bool
    oldest_timestamp_ms: int | None = None
    waiting: int = 0
    overdue: int = 0
    oldest_due_at_ms: int | None = None
    records: int = 0
    offsets: list[int] = field(default_factory=list)  # DLQ: the records read, for the ledger


def watched_topics(settings: Settings, leftovers: Sequence[str] = ()
                   ) -> list[tuple[str, TopicKind]]:
    """Main topic, retry tiers (shortest delay first), ``leftovers`` and DLQ, with kinds."""
    policy = settings.retry
    return [(policy.main_topic, "main"), *((t, "retry") for t in policy.retry_topics),
            *((t, "retry") for t in leftovers), (policy.dlq_topic, "dlq")]


class LagProbe:
    """Takes :class:`GroupSample` s of ``settings.kafka.group_id``; close it (or use ``with``)."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 scan_cap: int = DEFAULT_SCAN_CAP, timeout_s: float = 15.0) -> None:
        self._settings = settings
        self._group = settings.kafka.group_id
        self._clock = clock or SystemClock()
        self._scan_cap = scan_cap
        self._timeout = timeout_s
        self._group_offsets = GroupOffsets(settings, timeout_s=timeout_s)
        self._reader: Consumer | None = None
        self._reader_log = ClientLog()

    def __enter__(self) -> LagProbe:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._reader_log.close()
        self._group_offsets.close()

    def sample(self, on_progress: Progress | None = None) -> GroupSample:
        """Read offsets, members and the unconsumed records' timestamps and due times."""
        group = self._group_offsets
        counts = group.partition_counts()
        leftovers = leftover_tiers(self._settings, counts)
        topics = watched_topics(self._settings, leftovers)
        tps = [TopicPartition(name, p) for name, _ in topics for p in range(counts.get(name, 0))]
        members, committed = group.members_and_committed(tps)
        beginning = group.offsets(tps, "earliest")
        end = group.offsets(tps, "latest")
        now_ms = self._clock.now_ms()
        kinds = dict(topics)
        plans = {key: plan for key in beginning
                 if (plan := self._plan(kinds[key[0]], committed.get(key), beginning[key],
                                        end[key])) is not None}
        self._scan(plans, now_ms, on_progress)
        ledger = self._ledger() if any(p.kind == "dlq" for p in plans.values()) else None
        samples = []
        for name, kind in topics:
            parts = []
            for partition in range(counts.get(name, 0)):
                key = (name, partition)
                part = PartitionSample(partition=partition, committed=committed.get(key),
                                       beginning=beginning[key], end=end[key])
                scan = plans.get(key)
                if scan is not None:
                    counted = kind != "main" and not scan.capped
                    part = replace(part, oldest_timestamp_ms=scan.oldest_timestamp_ms,
                                   waiting=scan.waiting, overdue=scan.overdue,
                                   oldest_due_at_ms=scan.oldest_due_at_ms, capped=scan.capped,
                                   records=scan.records if counted else None,
                                   open=_open(ledger, name, partition, scan.offsets)
                                   if counted and kind == "dlq" else None)
                elif kind == "dlq" and ledger is not None:
                    part = replace(part, records=0, open=0)
                parts.append(part)
            samples.append(TopicSample(topic=name, kind=kind, exists=name in counts,
                                       partitions=tuple(parts),
                                       configured=name not in leftovers))
        return GroupSample(group=self._group, taken_at_ms=now_ms, members=members,
                           topics=tuple(samples),
                           system=tuple(read_states(self._settings, self._timeout)))

    def _plan(self, kind: TopicKind, committed: int | None, beginning: int,
              end: int) -> _Scan | None:
        start = beginning if kind == "dlq" or committed is None else max(committed, beginning)
        if start >= end:
            return None
        if kind == "main":
            return _Scan(kind=kind, start=start, stop=start + 1, capped=False)
        stop = min(end, start + self._scan_cap)
        return _Scan(kind=kind, start=start, stop=stop, capped=stop < end)

    def _scan(self, plans: dict[tuple[str, int], _Scan], now_ms: int,
              on_progress: Progress | None) -> None:
        if not plans:
            return
        total = sum(plan.stop - plan.start for plan in plans.values())
        reader = self._reader_consumer()
        reader.assign([TopicPartition(t, p, plan.start) for (t, p), plan in plans.items()])
        pending = set(plans)
        done = 0
        deadline = time.monotonic() + self._timeout
        try:
            while pending and time.monotonic() < deadline:
                for message in reader.consume(num_messages=500, timeout=0.5):
                    key = (message.topic() or "", message.partition() or 0)
                    if key not in pending:
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(key)
                        continue
                    plan = plans[key]
                    offset = message.offset() or 0
                    if offset < plan.stop:
                        _record(plan, message, now_ms)
                        done += 1
                    if offset >= plan.stop - 1:
                        pending.discard(key)
                if on_progress is not None:
                    on_progress(done, total)
        finally:
            reader.unassign()
        for key in pending:  # the deadline passed: what was read is all we know
            plans[key].capped = True

    def _ledger(self) -> DlqLedger | None:
        """The DLQ ledger (which dead letters are resolved), or None if it cannot be read."""
        try:
            return read_ledger(self._settings, dlq_ledger_topic_name(self._settings.topics.main))
        except (ClinicEventsError, KafkaException) as exc:
            LOG.debug("could not read the DLQ ledger: %s", exc)
            return None

    def _reader_consumer(self) -> Consumer:
        if self._reader is None:
            overrides: dict[str, Any] = {
                "group.id": f"{self._group}.lag-probe.{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False, "enable.auto.offset.store": False,
                "enable.partition.eof": True, "auto.offset.reset": "earliest",
            }
            # its repeated lines (a broker gone down mid --watch) logged once, then counted
            overrides["logger"] = self._reader_log
            self._reader = kafka_client(Consumer, self._settings.consumer_config(**overrides),
                                        "consumer")
        return self._reader


def _open(ledger: DlqLedger | None, topic: str, partition: int,
          offsets: Sequence[int]) -> int | None:
    """How many of a DLQ partition's records the ledger holds no resolution for."""
    if ledger is None:
        return None
    return sum(1 for offset in offsets if ledger.resolution(topic, partition, offset) is None)


def _record(plan: _Scan, message: Message, now_ms: int) -> None:
    """Fold one unconsumed record into its partition's scan."""
    plan.records += 1
    if plan.kind == "dlq":
        plan.offsets.append(message.offset() or 0)
    kind, timestamp = message.timestamp()
    stamp = None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp
    if plan.oldest_timestamp_ms is None:
        plan.oldest_timestamp_ms = stamp
    if plan.kind != "retry":
        return
    try:
        due_at = decode_headers(message_headers(message)).due_at_ms
    except HeaderError:
        due_at = None
    due = due_at if due_at is not None else (stamp if stamp is not None else now_ms)
    if due > now_ms:
        plan.waiting += 1
    else:
        plan.overdue += 1
        plan.oldest_due_at_ms = due if plan.oldest_due_at_ms is None else min(
            plan.oldest_due_at_ms, due)
