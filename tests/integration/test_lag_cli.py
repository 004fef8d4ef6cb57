"""``clinic-events lag`` against a real broker: figures, waiting vs overdue, and exit codes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.config.settings import Settings, load_settings
from consumer.events.model import event_to_json
from consumer.kafka.provisioning import ensure_topics
from consumer.kafka.publishing import publish_lines
from retry_topics.headers import RecordHeaders, encode_headers
from tests.integration.harness import run_cli, write_config
from tests.unit.sample_events import sample_event

PARTITIONS = 3


def _lag(tmp_path: Path, config: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(tmp_path, "lag", "--config", str(config), "--json", *extra)
    assert result.returncode in (0, 1, 2, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def _topic(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in document["topics"] if t["topic"] == name)


def _lines(count: int) -> list[str]:
    lines = []
    for index in range(count):
        event = event_to_json(sample_event("appointment.scheduled", f"evt-{index}"))
        event["payload"]["appointment_id"] = f"appt-{index}"
        lines.append(json.dumps(event))
    return lines


@pytest.fixture
def config(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Path:
    return write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                        partitions=PARTITIONS)


@pytest.fixture
def settings(config: Path) -> Settings:
    return load_settings(config, env={})


def _expected(admin: AdminClient, bootstrap: str, group: str, topic: str) -> list[
        tuple[int | None, int, int]]:
    """(committed, end, lag) per partition, from the admin API and the watermarks."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    result = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, tps)])[group].result(timeout=30)
    committed = {tp.partition: (tp.offset if tp.offset >= 0 else None)
                 for tp in result.topic_partitions}
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}.watermarks"})
    rows = []
    try:
        for tp in tps:
            low, high = reader.get_watermark_offsets(tp, timeout=10)
            start = committed[tp.partition]
            rows.append((start, high, high - (low if start is None else start)))
    finally:
        reader.close()
    return rows


def _consume_and_commit(settings: Settings, count: int) -> None:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                         "group.id": settings.kafka.group_id, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([settings.topics.main])
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while seen < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen += 1
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert seen == count


def test_lag_counts_unconsumed_records_and_drops_to_zero_once_committed(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, admin: AdminClient,
    config: Path, settings: Settings,
) -> None:
    """With nobody consuming, N published records are N records of lag aged at least as long
    as they have existed (STOP, exit 3); after the group commits everything, lag is 0 (OK)."""
    summary = publish_lines(_lines(12), settings)
    assert summary.ok
    published_at_ms = time.time_ns() // 1_000_000

    began_ms = time.time_ns() // 1_000_000
    code, document = _lag(tmp_path, config)

    main = _topic(document, topic_prefix)
    assert code == 3
    assert document["status"] == main["status"] == "STOP"
    assert main["lag"] == 12
    assert main["max_time_lag_ms"] >= began_ms - published_at_ms
    rows = [(p["committed"], p["end"], p["lag"]) for p in main["partitions"]]
    assert rows == _expected(admin, kafka_bootstrap, settings.kafka.group_id, topic_prefix)
    assert all(_topic(document, t)["lag"] == 0 for t in settings.retry.retry_topics)

    _consume_and_commit(settings, 12)
    code, document = _lag(tmp_path, config)

    main = _topic(document, topic_prefix)
    assert (code, document["status"], main["lag"], main["max_time_lag_ms"]) == (0, "OK", 0, None)
    rows = [(p["committed"], p["end"], p["lag"]) for p in main["partitions"]]
    assert rows == _expected(admin, kafka_bootstrap, settings.kafka.group_id, topic_prefix)
    assert sum(p["committed"] for p in main["partitions"]) == 12


def test_retry_records_split_into_waiting_and_overdue_and_overdue_is_an_error(
    tmp_path: Path, kafka_bootstrap: str, topic_prefix: str, config: Path,
    settings: Settings,
) -> None:
    """On a retry topic, records due in the future count as waiting and those past due as
    overdue; with a live group member the overdue ones make the status ERR (exit 2), the
    DLQ's records make it WARN, and without members the lag is STOP (exit 3)."""
    ensure_topics(settings)
    tier = settings.retry.retry_topics[0]
    now_ms = time.time_ns() // 1_000_000
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for index, due_at in enumerate([now_ms + 3_600_000] * 3 + [now_ms - 600_000] * 2):
        producer.produce(tier, key=f"k{index}".encode(), value=b"v",
                         headers=[*encode_headers(RecordHeaders(attempts=1, due_at_ms=due_at))])
    for index in range(2):
        producer.produce(settings.retry.dlq_topic, key=f"d{index}".encode(), value=b"dead")
    assert producer.flush(30) == 0

    member = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": settings.kafka.group_id,
                       "enable.auto.commit": False})
    assigned: list[object] = []
    member.subscribe([settings.topics.main],
                     on_assign=lambda _consumer, partitions: assigned.append(partitions))
    try:
        deadline = time.monotonic() + 60
        while not assigned and time.monotonic() < deadline:
            member.poll(0.2)
        assert assigned, "the member never joined the group"
        code, document = _lag(tmp_path, config)
    finally:
        member.close()

    retry = _topic(document, tier)
    assert (retry["lag"], retry["waiting"], retry["overdue"]) == (5, 3, 2)
    assert retry["status"] == "ERR"
    assert retry["max_overdue_ms"] >= 600_000
    dlq = _topic(document, settings.retry.dlq_topic)
    assert (dlq["status"], dlq["lag"]) == ("WARN", 2)
    assert dlq["max_time_lag_ms"] is not None
    assert (code, document["status"], document["members"]) == (2, "ERR", 1)

    code, document = _lag(tmp_path, config, "--no-history")
    assert (code, document["status"], _topic(document, tier)["status"]) == (3, "STOP", "STOP")
