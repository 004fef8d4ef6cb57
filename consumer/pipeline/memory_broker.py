"""An in-memory broker behind the run loop's ports, driven by a manual clock.

Why: the run loop's timing and rebalance behaviour (a retry partition paused until its head
is due, a seek back, a resume, a revoke in the middle of a wait, offsets stored past
transaction markers) is proven here in milliseconds and deterministically, with the same
contract tests that run against ``consumer.kafka.group_consumer`` on a real broker. It models
what the loop relies on, nothing more:

- a topic is a list of partitions, a partition a list of slots; a slot holds a record or a
  transaction marker, which takes an offset but is never delivered;
- one consumer group: positions per assigned partition, stored and committed offsets;
- a fetch queue like librdkafka's: each partition not paused is fetched a chunk at a time
  (``fetch_records``) once none of its records wait in the queue, chunks queue up in
  fetch order, and ``consume`` hands out the queue's head; pausing or seeking a partition
  drops its queued records, and it is fetched again, at the back, once resumed;
- an assignment change is announced to the listener inside the next ``consume``, as
  librdkafka does inside ``poll``; a pause outlives a revoke and a later assignment of the
  same partition to the same consumer, as librdkafka's does;
- ``consume`` with nothing to return advances the manual clock by its timeout: waiting costs
  simulated time only. A test that never stops the loop fails at ``max_idle_ms``.
- published records are acknowledged in ``serve``, like a producer's delivery reports;
- a transaction appends its hops and commits its offsets at once, or does nothing: it is
  aborted when it would commit offsets of a partition the consumer no longer holds (the
  broker's generation check), or when a test asks for it.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from consumer.pipeline.broker import (
    BrokerError,
    Partition,
    RebalanceListener,
    TransactionAborted,
    TransactionInDoubt,
)
from consumer.pipeline.outbox import Hop, OnAck
from consumer.pipeline.records import InboundRecord
from retry_topics.clock import ManualClock
from retry_topics.headers import Header


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as the broker keeps it."""

    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_ms: int


@dataclass(slots=True)
class _Group:
    committed: dict[Partition, int] = field(default_factory=dict)


class IdleTooLong(AssertionError):
    """The loop waited longer than the test allows without being stopped."""


class MemoryBroker:
    """Topics, one consumer group's committed offsets, and the manual clock they share."""

    def __init__(self, clock: ManualClock, *, max_idle_ms: int = 24 * 3_600_000) -> None:
        self.clock = clock
        self.max_idle_ms = max_idle_ms
        self._topics: dict[str, list[list[StoredRecord | None]]] = {}
        self._group = _Group()

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self._topics.setdefault(name, [[] for _ in range(partitions)])

    def partitions(self, topic: str) -> list[Partition]:
        return [(topic, p) for p in range(len(self._topics[topic]))]

    def append(self, topic: str, record: StoredRecord, partition: int | None = None) -> int:
        """Append ``record``; the partition is the key's (CRC32) unless given. Its offset."""
        log = self._topics[topic]
        if partition is None:
            partition = zlib.crc32(record.key or b"") % len(log)
        log[partition].append(record)
        return len(log[partition]) - 1

    def append_marker(self, topic: str, partition: int) -> int:
        """Append a transaction marker: it takes an offset, and nobody ever receives it."""
        log = self._topics[topic][partition]
        log.append(None)
        return len(log) - 1

    def records(self, topic: str) -> list[tuple[int, int, StoredRecord]]:
        """Every record of ``topic`` as (partition, offset, record)."""
        return [(p, offset, slot)
                for p, log in enumerate(self._topics.get(topic, []))
                for offset, slot in enumerate(log) if slot is not None]

    def end(self, partition: Partition) -> int:
        return len(self._topics[partition[0]][partition[1]])

    def slot(self, partition: Partition, offset: int) -> StoredRecord | None:
        return self._topics[partition[0]][partition[1]][offset]

    def committed(self, partition: Partition) -> int | None:
        return self._group.committed.get(partition)

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        self._group.committed.update(offsets)


class MemoryConsumer:
    """``ConsumerPort`` over a ``MemoryBroker``: the only member of its group."""

    def __init__(self, broker: MemoryBroker, *, fetch_records: int = 100) -> None:
        self._broker = broker
        self._fetch_records = fetch_records
        self._listener: RebalanceListener | None = None
        self._topics: tuple[str, ...] = ()
        self._assigned: set[Partition] = set()
        self._fetched_to: dict[Partition, int] = {}  # next offset to fetch
        self._queue: deque[InboundRecord] = deque()
        self._queued: dict[Partition, int] = {}  # records of each partition in the queue
        self._paused: set[Partition] = set()
        self._stored: dict[Partition, int] = {}
        self._announcements: list[tuple[str, list[Partition]]] = []
        self._idle_ms = 0
        self.closed = False

    # -- what tests do to the group ---------------------------------------------------------

    def rebalance(self, *, revoke: Iterable[Partition] = (), lose: Iterable[Partition] = (),
                  assign: Iterable[Partition] = ()) -> None:
        """Announce an assignment change at the next ``consume``: revoked, lost, assigned."""
        for kind, partitions in (("revoke", revoke), ("lose", lose), ("assign", assign)):
            if partitions := list(partitions):
                self._announcements.append((kind, partitions))

    @property
    def paused(self) -> frozenset[Partition]:
        return frozenset(self._paused)

    @property
    def assignment(self) -> frozenset[Partition]:
        return frozenset(self._assigned)

    @property
    def stored(self) -> Mapping[Partition, int]:
        """Offsets stored and not yet committed (librdkafka would auto-commit them)."""
        return dict(self._stored)

    # -- the port ---------------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        self._listener = listener
        self._topics = tuple(topics)
        for topic in topics:
            self._broker.create_topic(topic)
        self.rebalance(assign=[tp for topic in topics for tp in self._broker.partitions(topic)])

    def consume(self, max_records: int, timeout_s: float) -> list[InboundRecord]:
        self._announce()
        self._fetch()
        records: list[InboundRecord] = []
        while self._queue and len(records) < max_records:
            record = self._queue.popleft()
            tp = (record.topic, record.partition)
            self._queued[tp] -= 1
            records.append(record)
        if records:
            self._idle_ms = 0
            return records
        waited = max(1, round(timeout_s * 1000))
        self._idle_ms += waited
        if self._idle_ms > self._broker.max_idle_ms:
            raise IdleTooLong(f"the loop idled {self._idle_ms} ms without being stopped")
        self._broker.clock.advance(waited)
        return []

    def pause(self, partitions: Iterable[Partition]) -> None:
        for tp in partitions:
            self._paused.add(tp)
            self._drop_queued(tp)

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._paused.difference_update(partitions)

    def seek(self, partition: Partition, offset: int) -> None:
        if partition not in self._assigned:
            raise BrokerError(f"seek on {partition}, which is not assigned")
        self._drop_queued(partition)
        self._fetched_to[partition] = offset

    def positions(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """The next record's offset: the queue's next one of the partition, or the fetch
        position (past markers) when none waits."""
        positions = {}
        for tp in partitions:
            if tp not in self._fetched_to:
                continue
            queued = next((r.offset for r in self._queue
                           if (r.topic, r.partition) == tp), None) if self._queued.get(tp) else None
            positions[tp] = self._fetched_to[tp] if queued is None else queued
        return positions

    def backlog(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        positions = self.positions(partitions)
        return {tp: self._broker.end(tp) - position for tp, position in positions.items()}

    def committed(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        found = {tp: self._broker.committed(tp) for tp in partitions}
        return {tp: offset for tp, offset in found.items() if offset is not None}

    def store_offsets(self, offsets: Mapping[Partition, int]) -> None:
        strangers = [tp for tp in offsets if tp not in self._assigned]
        if strangers:
            raise BrokerError(f"store_offsets for partitions not assigned: {strangers}")
        self._stored.update(offsets)

    def commit(self) -> None:
        self._broker.commit({tp: offset for tp, offset in self._stored.items()
                             if tp in self._assigned})

    def close(self) -> None:
        if self._listener is not None and self._assigned:
            self._listener.on_revoke(sorted(self._assigned))
        self.commit()
        self._assigned.clear()
        self.closed = True

    def _announce(self) -> None:
        announcements, self._announcements = self._announcements, []
        for kind, partitions in announcements:
            assert self._listener is not None
            if kind == "assign":
                for tp in partitions:
                    self._assigned.add(tp)
                    committed = self._broker.committed(tp)
                    self._fetched_to[tp] = 0 if committed is None else committed
                self._listener.on_assign(partitions)
            elif kind == "revoke":
                self._listener.on_revoke(partitions)
                self._drop(partitions)
            else:
                self._listener.on_lost(partitions)
                self._drop(partitions)

    def _drop(self, partitions: list[Partition]) -> None:
        for tp in partitions:
            self._drop_queued(tp)
            self._assigned.discard(tp)
            self._fetched_to.pop(tp, None)
            self._stored.pop(tp, None)

    def _fetch(self) -> None:
        """Queue the next chunk of every fetching partition none of whose records wait."""
        for tp in sorted(self._assigned - self._paused):
            if self._queued.get(tp):
                continue
            position, end = self._fetched_to[tp], self._broker.end(tp)
            taken = 0
            while position < end and taken < self._fetch_records:
                slot = self._broker.slot(tp, position)
                if slot is not None:
                    self._queue.append(InboundRecord(tp[0], tp[1], position, slot.timestamp_ms,
                                                     slot.key, slot.value, slot.headers))
                    taken += 1
                position += 1
            self._fetched_to[tp] = position
            self._queued[tp] = taken

    def _drop_queued(self, tp: Partition) -> None:
        """Forget ``tp``'s queued records; it is fetched again from the first of them."""
        if not self._queued.get(tp):
            return
        first = next(r.offset for r in self._queue if (r.topic, r.partition) == tp)
        self._queue = deque(r for r in self._queue if (r.topic, r.partition) != tp)
        self._queued[tp] = 0
        self._fetched_to[tp] = first


class MemoryProducer:
    """``Publisher`` and ``ProducerPort`` over a ``MemoryBroker``; acks arrive in ``serve``."""

    def __init__(self, broker: MemoryBroker, *, refuse: Iterable[str] = ()) -> None:
        self._broker = broker
        self._refused = frozenset(refuse)
        self._unacknowledged: list[tuple[OnAck, str | None]] = []

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes]], on_ack: OnAck) -> None:
        if topic in self._refused:
            self._unacknowledged.append((on_ack, f"broker refused a record for {topic}"))
            return
        self._broker.create_topic(topic)
        self._broker.append(topic, StoredRecord(key, value, tuple(headers),
                                                self._broker.clock.now_ms()))
        self._unacknowledged.append((on_ack, None))

    def serve(self, timeout_s: float) -> None:
        acks, self._unacknowledged = self._unacknowledged, []
        for on_ack, error in acks:
            on_ack(error)

    def flush(self, timeout_s: float) -> None:
        self.serve(timeout_s)

    def close(self) -> None:
        """Nothing to release."""


class MemoryTransactions:
    """``Transactions`` over a ``MemoryBroker``, for the group of one ``MemoryConsumer``."""

    def __init__(self, broker: MemoryBroker, consumer: MemoryConsumer) -> None:
        self._broker = broker
        self._consumer = consumer
        self._aborts_left = 0
        self._doubts: list[bool] = []  # the next commits time out; True: they did commit
        # the batch in doubt (hop identities, offsets), and whether it went through
        self._in_doubt: tuple[list[int], dict[Partition, int], bool] | None = None
        self.committed = 0  # transactions committed
        self.aborted = 0

    def abort_next(self, count: int = 1) -> None:
        """Abort the next ``count`` transactions (a broker timeout, a fenced commit)."""
        self._aborts_left += count

    def doubt_next(self, *, committed: bool) -> None:
        """Let the next commit time out; it ``committed`` or not, which the call after it
        (bringing the same batch, as the port asks) learns."""
        self._doubts.append(committed)

    def commit(self, hops: Sequence[Hop], offsets: Mapping[Partition, int]) -> None:
        if self._in_doubt is not None:
            batch = ([id(hop) for hop in hops], dict(offsets))
            *in_doubt, went_through = self._in_doubt
            if batch != tuple(in_doubt):
                raise AssertionError("a commit in doubt must be brought again unchanged")
            self._in_doubt = None
            if not went_through:
                self.aborted += 1
                raise TransactionAborted("the commit in doubt was aborted by the broker")
            return
        strangers = [tp for tp in offsets if tp not in self._consumer.assignment]
        if self._aborts_left or strangers:
            self._aborts_left = max(0, self._aborts_left - 1)
            self.aborted += 1
            raise TransactionAborted(f"offsets of partitions not assigned: {strangers}"
                                     if strangers else "aborted as the test asked")
        doubt = self._doubts.pop(0) if self._doubts else None
        if doubt is None or doubt:
            for hop in hops:
                self._broker.create_topic(hop.topic)
                self._broker.append(hop.topic, StoredRecord(
                    hop.key, hop.value, tuple(hop.headers), self._broker.clock.now_ms()))
            self._broker.commit(offsets)
            self.committed += 1
        if doubt is not None:
            self._in_doubt = ([id(hop) for hop in hops], dict(offsets), doubt)
            raise TransactionInDoubt("the commit timed out, as the test asked")

    def close(self) -> None:
        """Nothing to release."""
