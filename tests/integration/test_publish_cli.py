"""``clinic-events publish`` against a real broker: what is sent, what is refused, what fails."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer.dev.local_kafka import free_port
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key, event_to_json
from retry_topics.headers import EVENT_ID, EVENT_TYPE, TRACEPARENT
from tests.integration.harness import read_topic, run_cli, write_config
from tests.unit.sample_events import sample_event

TRACEPARENT_FORMAT = re.compile(rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def _event_line(index: int, event_type: str = "appointment.scheduled") -> str:
    event = event_to_json(sample_event(event_type, f"evt-{index}"))
    if "appointment_id" in event["payload"]:
        event["payload"]["appointment_id"] = f"appt-{index}"
    return json.dumps(event)


def _records_held(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}.watermarks"})
    held = 0
    try:
        for partition in range(3):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            held += high - low
        return held
    finally:
        consumer.close()


def test_valid_lines_are_sent_and_invalid_ones_reported_by_line_and_field(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Exactly the valid lines reach the topic, keyed by entity with a W3C traceparent, and
    each invalid line is reported by number and field with a non-zero exit code."""
    bad_time = json.loads(_event_line(90))
    bad_time["payload"]["starts_at"] = "next tuesday"
    lines = [_event_line(1), _event_line(2, "intake.submitted"), "", '{"event_id": "x"',
             _event_line(3, "appointment.cancelled"), json.dumps(bad_time),
             _event_line(4, "eligibility.check_requested"), _event_line(5)]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix)

    result = run_cli(tmp_path, "publish", "--config", str(config), "--file", str(source), "--json")

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["sent"], report["rejected"], report["failed"]) == (5, 2, 0)
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (4, None), (6, "payload.starts_at")]
    assert "next tuesday" not in result.stdout + result.stderr

    received = read_topic(kafka_bootstrap, topic_prefix, 5)
    codec = EventCodec()
    events = [codec.decode(message.value()) for message in received]
    assert sorted(e["event_id"] for e in events) == ["evt-1", "evt-2", "evt-3", "evt-4", "evt-5"]
    for message, event in zip(received, events, strict=True):
        headers = dict(message.headers() or [])
        assert message.key() == entity_key(event)
        traceparent = headers[TRACEPARENT]
        assert isinstance(traceparent, bytes)
        assert TRACEPARENT_FORMAT.fullmatch(traceparent)
        assert headers[EVENT_ID] == event["event_id"].encode()
        assert headers[EVENT_TYPE] == event["event_type"].encode()
    assert _records_held(kafka_bootstrap, topic_prefix) == 5, "nothing else was sent"


def test_stdin_with_topic_override_creates_the_layout_and_exits_zero(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, admin: AdminClient
) -> None:
    """Events piped on stdin to ``--topic`` are all sent, the topic layout is created first,
    and the human summary says so with exit code 0."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=f"{topic_prefix}.unused")
    other = f"{topic_prefix}.other"
    stdin = "\n".join(_event_line(i) for i in range(10)) + "\n"

    result = run_cli(tmp_path, "publish", "--config", str(config), "--file", "-",
                  "--topic", other, "--rate", "200", stdin=stdin)

    assert result.returncode == 0, result.stderr
    assert f"published to {other}" in result.stdout
    assert re.search(r"\b10\b", result.stdout)
    received = read_topic(kafka_bootstrap, other, 10)
    assert len(received) == 10
    assert len({message.partition() for message in received}) > 1, "keys spread over partitions"
    topics = admin.list_topics(timeout=10).topics
    layout = {f"{other}.retry.1s", f"{other}.retry.2s", f"{other}.dlq", f"{other}.audit"}
    assert layout <= set(topics)


def test_an_unreachable_broker_counts_every_event_as_failed(tmp_path: Path) -> None:
    """With no broker listening, publishing ends after the delivery timeout, counts each
    event as failed and exits non-zero instead of hanging."""
    config = write_config(tmp_path, bootstrap=f"127.0.0.1:{free_port()}", main="t.nobroker")
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(_event_line(i) for i in range(3)) + "\n")

    began = time.monotonic()
    result = run_cli(tmp_path, "publish", "--config", str(config), "--file", str(source),
                  "--json", "--no-create-topics", "--timeout", "2s")

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["sent"], report["rejected"], report["failed"]) == (0, 0, 3)
    assert time.monotonic() - began < 30


def test_a_missing_topic_without_topic_creation_is_named_and_nothing_is_created(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, admin: AdminClient
) -> None:
    """--no-create-topics to a topic the broker does not have: exit 1 at once, saying which
    topic is missing, rather than every event timing out."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix)
    source = tmp_path / "events.jsonl"
    source.write_text(_event_line(1) + "\n")

    began = time.monotonic()
    result = run_cli(tmp_path, "publish", "--config", str(config), "--file", str(source),
                  "--no-create-topics", "--timeout", "20s")

    assert result.returncode == 1, result.stderr
    assert f"topic {topic_prefix} does not exist" in result.stderr
    assert time.monotonic() - began < 15
    assert topic_prefix not in admin.list_topics(timeout=10).topics


def test_an_empty_file_is_a_warning_not_a_failure(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix)
    source = tmp_path / "empty.jsonl"
    source.write_text("\n\n")

    result = run_cli(tmp_path, "publish", "--config", str(config), "--file", str(source), "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 0
    assert f"warning: no events in {source}" in result.stderr
