"""The in-memory broker keeps the consumer port's contract (``tests/contract``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumer.pipeline.broker import ConsumerPort, Partition
from consumer.pipeline.memory_broker import MemoryBroker, MemoryConsumer, StoredRecord
from retry_topics.clock import ManualClock
from tests.contract.consumer_port import CHECKS, PortWorld


class MemoryWorld:
    topic = "contract.t"

    def __init__(self) -> None:
        self.broker = MemoryBroker(ManualClock(), max_idle_ms=60_000)
        self.broker.create_topic(self.topic, 2)

    def produce(self, partition: int, key: bytes, value: bytes,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        self.broker.append(self.topic, StoredRecord(key, value, tuple(headers or ()),
                                                    self.broker.clock.now_ms()), partition)

    def produce_in_transaction(self, partition: int, key: bytes, value: bytes) -> None:
        self.produce(partition, key, value)
        self.broker.append_marker(self.topic, partition)

    def consumer(self) -> ConsumerPort:
        return MemoryConsumer(self.broker)

    def committed(self, partition: Partition) -> int | None:
        return self.broker.committed(partition)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_memory_consumer_keeps_the_contract(check: Callable[[PortWorld], None]) -> None:
    check(MemoryWorld())
