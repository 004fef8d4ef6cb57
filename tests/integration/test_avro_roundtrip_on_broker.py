"""Avro events produced to and consumed from a real Apache Kafka broker."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from tests.integration.conftest import create_topics
from tests.unit.sample_events import sample_events


def test_events_produced_as_avro_are_consumed_and_decoded_intact(
    kafka_bootstrap: str, admin: AdminClient, topic_prefix: str
) -> None:
    """Every event type survives a produce/consume trip through the broker byte for byte."""
    create_topics(admin, [topic_prefix], partitions=3)
    codec = EventCodec()
    events = sample_events()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for event in events:
        producer.produce(topic_prefix, key=entity_key(event), value=codec.encode(event))
    assert producer.flush(30) == 0

    consumer = Consumer({
        "bootstrap.servers": kafka_bootstrap,
        "group.id": f"{topic_prefix}.reader",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic_prefix])
    received: list[tuple[bytes | None, dict[str, object]]] = []
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(events) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            received.append((message.key(), codec.decode(message.value())))
    finally:
        consumer.close()

    by_id = {event["event_id"]: event for _, event in received}
    assert by_id == {event["event_id"]: event for event in events}
    assert all(key == entity_key(event) for key, event in received)
