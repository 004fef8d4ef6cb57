"""Records published in transactions (as `dlq replay` does): the consumer commits to the end.

Each transaction ends with a marker that takes an offset and is never delivered, so a
consumer that stores "last record + 1" stays one short of the end and every lag monitor
shows lag that is not there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.config.settings import Settings
from consumer.dev.simulator import DownstreamSimulator
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from consumer.kafka.provisioning import ensure_topics
from tests.integration.harness import (
    new_event,
    run_cli,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)

PARTITIONS = 3


def _produce_in_transactions(bootstrap: str, topic: str,
                             transactions: list[list[dict[str, Any]]]) -> None:
    codec = EventCodec()
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}.tx"})
    producer.init_transactions(30)
    for events in transactions:
        producer.begin_transaction()
        for index, event in enumerate(events):
            # every partition gets records, hence a marker (keys alone could miss one)
            producer.produce(topic, key=entity_key(event), value=codec.encode(event),
                             partition=index % PARTITIONS)
        producer.commit_transaction(30)


def _committed_and_end(settings: Settings) -> list[tuple[int, int]]:
    """(committed offset, end offset) of each main-topic partition, for the runner's group."""
    reader = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                       "group.id": settings.kafka.group_id, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(settings.topics.main, p) for p in range(PARTITIONS)]
        committed = reader.committed(tps, timeout=10)
        return [(tp.offset, reader.get_watermark_offsets(tp, timeout=10)[1])
                for tp in committed]
    finally:
        reader.close()


def test_a_consumer_that_read_transactions_commits_past_their_markers(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Every event is delivered once; while it runs and after it stops, the group's committed
    offset is each partition's end, and `lag` says OK with lag 0 (exit 0)."""
    transactions = [[new_event() for _ in range(4)] for _ in range(3)]
    with DownstreamSimulator() as downstream:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=downstream.events_url, partitions=PARTITIONS)
        settings = settings_for(config)
        ensure_topics(settings)
        _produce_in_transactions(kafka_bootstrap, topic_prefix, transactions)
        with running_consumer(settings):
            assert downstream.wait_for(lambda: len(downstream.delivered_keys()) == 12, 30)
            assert wait_until(lambda: all(committed == end for committed, end
                                          in _committed_and_end(settings)), 30), \
                _committed_and_end(settings)
        assert sorted(downstream.delivered_keys()) == sorted(
            str(event["event_id"]) for events in transactions for event in events)

    rows = _committed_and_end(settings)
    assert all(committed == end for committed, end in rows), rows
    assert sum(end for _, end in rows) > 12  # the markers: offsets no record was delivered for

    result = run_cli(tmp_path, "lag", "--config", str(config), "--json")
    document = json.loads(result.stdout)
    main = next(t for t in document["topics"] if t["topic"] == topic_prefix)
    assert (result.returncode, document["status"], main["lag"]) == (0, "OK", 0), result.stderr
