"""The edge to confluent-kafka: client construction, publishing, and record conversion.

The only module of the consumer that builds Kafka clients. Consumers never store offsets
automatically (``enable.auto.offset.store=False``): the runner stores an offset only after
the record's fate is durable, and librdkafka's auto-commit then commits stored offsets.
``fetch.wait.max.ms`` is lowered so a retry partition resumed at its due time is fetched
promptly instead of up to 500 ms later.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer

from consumer.config import Settings
from consumer.processing import OnAck
from consumer.records import InboundRecord
from retry_topics.headers import Header


def build_consumer(settings: Settings, **overrides: Any) -> Consumer:
    """The group consumer of ``run``: manual offset storage, prompt fetches."""
    return Consumer(settings.consumer_config(**{
        "group.id": settings.kafka.group_id,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 25,
        "enable.partition.eof": False,
        **overrides,
    }))


def build_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer: acknowledged by all in-sync replicas, no duplicates on retry."""
    return Producer(settings.producer_config(**{
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60_000,
        **overrides,
    }))


class KafkaPublisher:
    """``Publisher`` over a confluent-kafka Producer; acks arrive via ``producer.poll``."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes]], on_ack: OnAck) -> None:
        def delivered(error: KafkaError | None, _message: Message) -> None:
            on_ack(None if error is None else str(error))

        wire: list[tuple[str, str | bytes | None]] = list(headers)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=wire,
                                       on_delivery=delivered)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let acks drain, then retry


def message_headers(message: Message) -> tuple[Header, ...]:
    """A message's headers as (name, bytes or None) pairs, whatever form the client gave."""
    raw = message.headers()
    return _header_pairs(raw) if raw else ()


def _header_pairs(raw: Any) -> tuple[Header, ...]:
    """``(name, bytes or None)`` pairs from a client's list, or a dict / ``str`` values.

    A consumed message's headers are a list of such pairs already (librdkafka values are
    bytes): copied as they are, which is a third of the cost of rebuilding every pair.
    """
    if type(raw) is list:
        pairs = tuple(raw)
        for _, value in pairs:
            if type(value) is str:
                break
        else:
            return pairs
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple(
        (name, value.encode("utf-8") if isinstance(value, str) else value)
        for name, value in items
    )


def to_inbound(message: Message, topic: str, partition: int) -> InboundRecord:
    """Detach a consumed message from confluent-kafka; its value and headers are decoded later.

    ``topic`` and ``partition`` are the message's own, which the caller has already read.
    Runs once per consumed record, so it is written for speed: the record is built
    positionally, and its headers are decoded only when something reads them (see
    ``consumer.records``).
    """
    raw = message.headers()
    timestamp_type, timestamp = message.timestamp()
    return InboundRecord(
        topic, partition, message.offset() or 0,
        timestamp if timestamp_type and timestamp >= 0 else None,
        message.key(), message.value(), _header_pairs(raw) if raw else ())
