"""The consumer port's contract: what the run loop relies on from any broker behind it.

The same checks run against the in-memory broker (``tests/unit/pipeline``) and against
``KafkaGroupConsumer`` on a real Kafka broker (``tests/integration``), so the fast tests of
the run loop rest on behaviour the real client was seen to have. A ``PortWorld`` gives each
check a fresh topic and a consumer of a fresh group.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from consumer.pipeline.broker import BrokerError, ConsumerPort, Partition
from consumer.pipeline.records import InboundRecord

DEADLINE_S = 30.0


class PortWorld(Protocol):
    """A broker seen from a test: a topic of two partitions, producing, group offsets."""

    topic: str

    def produce(self, partition: int, key: bytes, value: bytes,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        """Append a record to ``partition``, acknowledged before this returns."""

    def produce_in_transaction(self, partition: int, key: bytes, value: bytes) -> None:
        """Append a committed transactional record: its commit marker follows it."""

    def consumer(self) -> ConsumerPort:
        """A consumer of this world's group (the same group on every call)."""

    def committed(self, partition: Partition) -> int | None:
        """The group's committed offset of ``partition``."""


@dataclass
class Listener:
    assigned: list[Partition] = field(default_factory=list)
    revoked: list[Partition] = field(default_factory=list)
    lost: list[Partition] = field(default_factory=list)

    def on_assign(self, partitions: list[Partition]) -> None:
        self.assigned.extend(partitions)

    def on_revoke(self, partitions: list[Partition]) -> None:
        self.revoked.extend(partitions)

    def on_lost(self, partitions: list[Partition]) -> None:
        self.lost.extend(partitions)


def consume_until(consumer: ConsumerPort, done: Callable[[list[InboundRecord]], bool],
                  records: list[InboundRecord] | None = None) -> list[InboundRecord]:
    """Consume until ``done(records so far)`` (starting from ``records``); fails at the
    deadline."""
    records = list(records or [])
    deadline = time.monotonic() + DEADLINE_S
    while not done(records):
        assert time.monotonic() < deadline, f"gave up after {DEADLINE_S}s with {records}"
        records.extend(consumer.consume(100, 0.1))
    return records


@dataclass
class Member:
    """A subscribed consumer, what its listener heard, and records consumed while joining."""

    consumer: ConsumerPort
    listener: Listener
    early: list[InboundRecord]

    def consume_until(self, done: Callable[[list[InboundRecord]], bool]) -> list[InboundRecord]:
        records = consume_until(self.consumer, done, self.early)
        self.early = []
        return records


def _joined(world: PortWorld) -> Member:
    consumer = world.consumer()
    listener = Listener()
    consumer.subscribe([world.topic], listener)
    early = consume_until(consumer, lambda _records: len(listener.assigned) == 2)
    return Member(consumer, listener, early)


def _of(records: list[InboundRecord], partition: int) -> list[InboundRecord]:
    return [r for r in records if r.partition == partition]


def records_come_in_order_with_their_key_value_and_headers(world: PortWorld) -> None:
    for n in range(3):
        world.produce(n % 2, f"k{n}".encode(), f"v{n}".encode(), [("h", str(n).encode())])
    member = _joined(world)
    consumer, listener = member.consumer, member.listener
    try:
        assert sorted(listener.assigned) == [(world.topic, 0), (world.topic, 1)]
        records = member.consume_until(lambda got: len(got) == 3)
        assert [(r.offset, r.key, r.value) for r in _of(records, 0)] == [
            (0, b"k0", b"v0"), (1, b"k2", b"v2")]
        assert [(r.key, r.raw_headers) for r in _of(records, 1)] == [(b"k1", (("h", b"1"),))]
        assert all(r.topic == world.topic and r.timestamp_ms for r in records)
    finally:
        consumer.close()


def a_paused_partition_yields_nothing_until_resumed(world: PortWorld) -> None:
    member = _joined(world)
    consumer = member.consumer
    try:
        tp = (world.topic, 0)
        consumer.pause([tp])
        world.produce(0, b"a", b"held")
        world.produce(1, b"b", b"flows")
        records = member.consume_until(lambda got: any(r.partition == 1 for r in got))
        assert not _of(records, 0)
        consumer.resume([tp])
        records = member.consume_until(lambda got: bool(_of(got, 0)))
        assert [r.value for r in _of(records, 0)] == [b"held"]
    finally:
        consumer.close()


def seek_makes_an_offset_the_next_one_fetched(world: PortWorld) -> None:
    for n in range(3):
        world.produce(0, b"k", f"v{n}".encode())
    member = _joined(world)
    consumer = member.consumer
    try:
        member.consume_until(lambda got: len(got) == 3)
        consumer.seek((world.topic, 0), 1)
        again = member.consume_until(lambda got: len(got) == 2)
        assert [r.offset for r in again] == [1, 2]
    finally:
        consumer.close()


def stored_offsets_are_committed_and_a_new_member_starts_there(world: PortWorld) -> None:
    for n in range(3):
        world.produce(0, b"k", f"v{n}".encode())
    member = _joined(world)
    consumer = member.consumer
    try:
        member.consume_until(lambda got: len(got) == 3)
        assert consumer.positions([(world.topic, 0)]) == {(world.topic, 0): 3}
        consumer.store_offsets({(world.topic, 0): 2})
        consumer.commit()
        assert world.committed((world.topic, 0)) == 2
    finally:
        consumer.close()
    member = _joined(world)
    successor = member.consumer
    try:
        records = member.consume_until(lambda got: len(got) == 1)
        assert [r.offset for r in records] == [2]
    finally:
        successor.close()


def committed_reads_the_groups_offsets_and_leaves_out_partitions_without_one(
        world: PortWorld) -> None:
    world.produce(0, b"k", b"v0")
    member = _joined(world)
    consumer = member.consumer
    try:
        member.consume_until(lambda got: len(got) == 1)
        tp0, tp1 = (world.topic, 0), (world.topic, 1)
        assert consumer.committed([tp0, tp1]) == {}
        consumer.store_offsets({tp0: 1})
        consumer.commit()
        assert consumer.committed([tp0, tp1]) == {tp0: 1}
    finally:
        consumer.close()


def storing_an_offset_of_a_partition_not_assigned_is_a_broker_error(world: PortWorld) -> None:
    member = _joined(world)
    consumer = member.consumer
    try:
        try:
            consumer.store_offsets({("not-assigned-topic", 0): 1})
        except BrokerError:
            pass
        else:
            raise AssertionError("store_offsets accepted a partition it does not own")
        consumer.commit()  # nothing stored: not an error
    finally:
        consumer.close()


def a_transaction_marker_moves_the_position_but_is_never_received(world: PortWorld) -> None:
    world.produce_in_transaction(0, b"k", b"committed")
    member = _joined(world)
    consumer = member.consumer
    try:
        records = member.consume_until(lambda got: len(got) == 1)
        assert [r.offset for r in records] == [0]
        tp = (world.topic, 0)
        member.consume_until(lambda _got: consumer.positions([tp]).get(tp) == 2)
    finally:
        consumer.close()


def backlog_counts_the_records_not_handed_out_yet(world: PortWorld) -> None:
    for n in range(3):
        world.produce(0, b"k", f"v{n}".encode())
    consumer = world.consumer()
    listener = Listener()
    consumer.subscribe([world.topic], listener)
    try:
        first: list[InboundRecord] = []
        deadline = time.monotonic() + DEADLINE_S
        while not first:
            assert time.monotonic() < deadline, "no record within the deadline"
            first = consumer.consume(1, 0.1)
        assert [r.offset for r in first] == [0]
        tp0, tp1 = (world.topic, 0), (world.topic, 1)
        while consumer.backlog([tp0, tp1]) != {tp0: 2, tp1: 0}:
            assert time.monotonic() < deadline, f"backlog {consumer.backlog([tp0, tp1])}"
            time.sleep(0.05)
    finally:
        consumer.close()


def closing_revokes_every_partition(world: PortWorld) -> None:
    member = _joined(world)
    consumer, listener = member.consumer, member.listener
    consumer.close()
    assert sorted(listener.revoked) == sorted(listener.assigned)


CHECKS = [
    records_come_in_order_with_their_key_value_and_headers,
    a_paused_partition_yields_nothing_until_resumed,
    seek_makes_an_offset_the_next_one_fetched,
    stored_offsets_are_committed_and_a_new_member_starts_there,
    committed_reads_the_groups_offsets_and_leaves_out_partitions_without_one,
    storing_an_offset_of_a_partition_not_assigned_is_a_broker_error,
    a_transaction_marker_moves_the_position_but_is_never_received,
    backlog_counts_the_records_not_handed_out_yet,
    closing_revokes_every_partition,
]
