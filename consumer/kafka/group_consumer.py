"""The run loop's broker ports over confluent-kafka (``consumer.pipeline.broker``).

``KafkaGroupConsumer`` turns the port's ``(topic, partition)`` pairs into
``TopicPartition`` objects and consumed ``Message`` objects into ``InboundRecord`` values,
and maps client errors onto ``BrokerError``, so nothing above this module knows the client.
Consumer errors that arrive in place of a record (a broker connection lost, a partition at
its end) are logged here and never reach the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.kafka.clients import kafka_reason, to_inbound
from consumer.pipeline.broker import BrokerError, Partition, RebalanceListener
from consumer.pipeline.records import InboundRecord

LOG = logging.getLogger("clinic_events.runner")


def _pairs(partitions: list[TopicPartition]) -> list[Partition]:
    return [(tp.topic, tp.partition) for tp in partitions]


def _topic_partitions(partitions: Iterable[Partition]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in partitions]


class KafkaGroupConsumer:
    """``ConsumerPort`` over a confluent-kafka ``Consumer`` (built by ``build_consumer``)."""

    def __init__(self, consumer: Consumer, *, timeout_s: float = 10.0) -> None:
        self._consumer = consumer
        self._timeout_s = timeout_s
        self._starts: dict[Partition, int] = {}  # where fetching began, per assignment

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            listener.on_assign(_pairs(partitions))

        def on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            listener.on_revoke(_pairs(partitions))
            self._forget_starts(partitions)

        def on_lost(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            listener.on_lost(_pairs(partitions))
            self._forget_starts(partitions)

        self._consumer.subscribe(list(topics), on_assign=on_assign, on_revoke=on_revoke,
                                 on_lost=on_lost)

    def consume(self, max_records: int, timeout_s: float) -> list[InboundRecord]:
        # ``consume(n, timeout)`` waits for n records or the whole timeout, which would hold a
        # lone record back; ``poll`` returns as soon as one arrives, then the rest is taken
        # without waiting.
        messages: list[Message] = self._consumer.consume(max_records, 0)
        if not messages:
            first = self._consumer.poll(timeout_s)
            if first is None:
                return []
            messages = [first, *self._consumer.consume(max_records - 1, 0)] \
                if max_records > 1 else [first]
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    LOG.warning("consumer error: %s", error)
                continue
            records.append(to_inbound(message, str(message.topic()), message.partition() or 0))
        return records

    def pause(self, partitions: Iterable[Partition]) -> None:
        self._consumer.pause(_topic_partitions(partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._consumer.resume(_topic_partitions(partitions))

    def seek(self, partition: Partition, offset: int) -> None:
        self._consumer.seek(TopicPartition(partition[0], partition[1], offset))

    def positions(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        try:
            positions = self._consumer.position(_topic_partitions(partitions))
        except KafkaException as exc:
            raise BrokerError(kafka_reason(exc)) from exc
        return {(tp.topic, tp.partition): tp.offset for tp in positions
                if tp.error is None and tp.offset >= 0}

    def backlog(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """High watermark (as the last fetch saw it) less the next offset to hand out.

        Before a partition has handed out a record, librdkafka has no position for it:
        fetching began at the group's committed offset, read once per assignment (or at
        the beginning, where the group never committed: ``auto.offset.reset``).
        """
        try:
            positions = self.positions(partitions)
            unknown = [tp for tp in partitions if tp not in positions]
            if any(tp not in self._starts for tp in unknown):
                self._read_starts([tp for tp in unknown if tp not in self._starts])
            backlog = {}
            for tp in partitions:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp[0], tp[1]), cached=True)
                start = self._starts.get(tp, -1)
                position = positions.get(tp, start if start >= 0 else low)
                backlog[tp] = max(0, high - position) if high >= 0 and position >= 0 else 0
            return backlog
        except KafkaException as exc:
            raise BrokerError(kafka_reason(exc)) from exc

    def _read_starts(self, partitions: list[Partition]) -> None:
        committed = self._consumer.committed(_topic_partitions(partitions),
                                             timeout=self._timeout_s)
        for tp in committed:
            self._starts[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else -1

    def _forget_starts(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._starts.pop((tp.topic, tp.partition), None)

    def committed(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        try:
            found = self._consumer.committed(_topic_partitions(partitions),
                                             timeout=self._timeout_s)
        except KafkaException as exc:
            raise BrokerError(kafka_reason(exc)) from exc
        return {(tp.topic, tp.partition): tp.offset for tp in found
                if tp.error is None and tp.offset >= 0}

    def store_offsets(self, offsets: Mapping[Partition, int]) -> None:
        try:
            self._consumer.store_offsets(offsets=[
                TopicPartition(topic, partition, offset)
                for (topic, partition), offset in offsets.items()])
        except KafkaException as exc:
            raise BrokerError(kafka_reason(exc)) from exc

    def commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET:
                return
            raise BrokerError(kafka_reason(exc)) from exc

    def close(self) -> None:
        self._consumer.close()
