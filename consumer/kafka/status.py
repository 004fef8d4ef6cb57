"""The status topic: each ``run`` instance's condition, as ``lag`` reads it.

The runner states its condition (``retry_topics.system_state.SystemState``) through
``KafkaStatusBoard``, keyed by its instance, on the compacted topic
``<main>.status``; ``read_states`` reads the latest state of every instance back. A state
that cannot be published is logged and dropped: telling operators must never hold up
events.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from consumer.config.settings import Settings
from consumer.kafka.client_log import ClientLog
from consumer.kafka.clients import KafkaPublisher, kafka_client, kafka_reason
from retry_topics.naming import status_topic_name
from retry_topics.system_state import SystemState

LOG = logging.getLogger("clinic_events.status")


class KafkaStatusBoard:
    """``StatusBoard`` over the run's publisher; acks are served by the run loop."""

    def __init__(self, publisher: KafkaPublisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    def state(self, state: SystemState) -> None:
        def acked(error: str | None) -> None:
            if error is not None:
                LOG.warning("could not state %s on %s: %s", state.condition, self._topic, error)

        self._publisher.publish(self._topic, state.instance.encode(), state.to_json(), [],
                                acked)


#: One ``consume`` call's wait: librdkafka's ``consume(n, timeout)`` returns only once it has
#: ``n`` records or the timeout passed, even past the end of every partition, so a long
#: timeout made every ``lag`` wait all of it.
READ_SLICE_S = 0.2


def read_states(settings: Settings, timeout_s: float = 10.0) -> list[SystemState]:
    """The latest state of every instance that stated one (empty if the topic is missing).

    Reads to the end of every partition (its end-of-partition event), giving up after
    ``timeout_s``. Its client's repeated log lines (a broker down while ``run`` samples its
    lag, or ``lag`` asks) are logged once and counted.
    """
    topic = status_topic_name(settings.topics.main)
    log = ClientLog()
    overrides: dict[str, Any] = {
        "group.id": f"{settings.kafka.group_id}.status-reader.{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest", "logger": log,
    }
    reader: Consumer = kafka_client(Consumer, settings.consumer_config(**overrides), "consumer")
    try:
        try:
            metadata = reader.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            LOG.debug("could not read %s: %s", topic, kafka_reason(exc))
            return []
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return []
        partitions = list(found.partitions)
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        latest: dict[bytes, SystemState | None] = {}
        open_partitions = set(partitions)
        deadline = time.monotonic() + timeout_s
        while open_partitions and (left := deadline - time.monotonic()) > 0:
            for message in reader.consume(500, min(READ_SLICE_S, left)):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(message.partition())
                    continue
                value = message.value()
                latest[message.key() or b""] = (SystemState.from_json(value)
                                                 if value is not None else None)
        return [state for state in latest.values() if state is not None]
    finally:
        try:
            reader.close()
        finally:
            log.close()
