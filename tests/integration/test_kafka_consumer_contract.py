"""KafkaGroupConsumer keeps the consumer port's contract on a real broker (``tests/contract``).

The run loop's fast tests use the in-memory broker; these checks are what ties that broker's
behaviour to the real client's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.kafka.clients import build_consumer
from consumer.kafka.group_consumer import KafkaGroupConsumer
from consumer.pipeline.broker import ConsumerPort, Partition
from tests.contract.consumer_port import CHECKS, PortWorld
from tests.integration.conftest import create_topics
from tests.integration.harness import settings_for, write_config


class KafkaWorld:
    def __init__(self, bootstrap: str, topic: str, tmp_path: Path) -> None:
        self.topic = topic
        self._bootstrap = bootstrap
        self._settings = settings_for(write_config(tmp_path, bootstrap=bootstrap, main=topic))
        self._members: list[KafkaGroupConsumer] = []
        create_topics(AdminClient({"bootstrap.servers": bootstrap}), [topic], partitions=2)

    def produce(self, partition: int, key: bytes, value: bytes,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        producer = Producer({"bootstrap.servers": self._bootstrap})
        wire: list[tuple[str, str | bytes | None]] = list(headers or [])
        producer.produce(self.topic, value=value, key=key, partition=partition, headers=wire)
        assert producer.flush(30) == 0

    def produce_in_transaction(self, partition: int, key: bytes, value: bytes) -> None:
        producer = Producer({"bootstrap.servers": self._bootstrap,
                             "transactional.id": f"contract-{uuid.uuid4().hex}"})
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(self.topic, value=value, key=key, partition=partition)
        producer.commit_transaction(30)

    def consumer(self) -> ConsumerPort:
        member = KafkaGroupConsumer(build_consumer(self._settings))
        self._members.append(member)
        return member

    def committed(self, partition: Partition) -> int | None:
        reader = build_consumer(self._settings)
        try:
            (found,) = reader.committed([TopicPartition(*partition)], timeout=30)
            return found.offset if found.offset >= 0 else None
        finally:
            reader.close()


@pytest.fixture
def world(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> KafkaWorld:
    return KafkaWorld(kafka_bootstrap, topic_prefix, tmp_path)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_kafka_consumer_keeps_the_contract(check: Callable[[PortWorld], None],
                                               world: KafkaWorld) -> None:
    """The real client behaves as the in-memory broker the run loop's unit tests use."""
    check(world)
