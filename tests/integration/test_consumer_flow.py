"""The consumer end to end: real broker, real HTTP downstream (the simulator), real SQLite."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from opentelemetry.sdk.trace import TracerProvider

from consumer.cli.wiring import build_runner
from consumer.dev.simulator import DownstreamSimulator, FailurePlan, TransientKind
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from consumer.kafka.clients import message_headers
from retry_topics import headers as h
from tests.integration.harness import (
    new_event,
    produce,
    read_topic,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)


def _gaps(sim: DownstreamSimulator, key: str) -> list[float]:
    times = [r.monotonic_s for r in sim.requests() if r.idempotency_key == key]
    return [later - earlier for earlier, later in pairwise(times)]


@pytest.mark.parametrize("concurrency", [4, 1])
def test_event_is_delivered_on_first_try(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, concurrency: int
) -> None:
    """A healthy downstream receives each event once, with its idempotency key and trace.

    Concurrency 1 processes on the poll thread itself (no lanes): same outcome.
    """
    with DownstreamSimulator() as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url,
                                             concurrency=concurrency))
        events = [new_event() for _ in range(5)]
        with running_consumer(settings, tracer_provider=TracerProvider()) as assembly:
            produce(kafka_bootstrap, topic_prefix, events)
            assert sim.wait_for(lambda: len(sim.delivered_keys()) == 5, 30)
            assert wait_until(lambda: assembly.runner.stats["delivered"] == 5, 10)
        assert sorted(sim.delivered_keys()) == sorted(e["event_id"] for e in events)
        assert all(r.traceparent for r in sim.requests())
        assert sim.duplicate_deliveries() == {}


def test_transient_twice_then_success_waits_at_least_each_tier_delay(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Two 503s send the event through tier 1 and tier 2, never early and promptly after."""
    with DownstreamSimulator(FailurePlan(fail_first=2)) as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url,
                                             delays=("1s", "2s")))
        event = new_event()
        with running_consumer(settings):
            produce(kafka_bootstrap, topic_prefix, [event])
            assert sim.wait_for(lambda: event["event_id"] in sim.delivered_keys(), 30)
        first_gap, second_gap = _gaps(sim, event["event_id"])
        assert 1.0 <= first_gap <= 2.0
        assert 2.0 <= second_gap <= 3.0
        assert sim.attempts_for(event["event_id"]) == 3


def test_permanent_error_goes_straight_to_the_dlq(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A 4xx is not retried: one attempt, then the DLQ with provenance headers."""
    event = new_event()
    with DownstreamSimulator(FailurePlan(permanent_keys=frozenset({event["event_id"]}))) as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url))
        with running_consumer(settings):
            produce(kafka_bootstrap, topic_prefix, [event])
            dead = read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 1)
        assert sim.attempts_for(event["event_id"]) == 1
    assert len(dead) == 1
    decoded = h.decode_headers(message_headers(dead[0]))
    assert decoded.classification == "permanent"
    assert decoded.dlq_reason == "permanent"
    assert decoded.original_topic == topic_prefix
    assert decoded.original_offset == 0
    assert decoded.attempts == 1
    assert decoded.error_class == "http.422"
    assert decoded.event_id == event["event_id"]
    assert EventCodec().decode(dead[0].value()) == event


def test_always_transient_ends_in_dlq_after_every_tier(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """An event that always fails transiently gets 1 + len(delays) topic attempts, then DLQ."""
    event = new_event()
    with DownstreamSimulator(FailurePlan(always_fail_keys=frozenset({event["event_id"]}))) as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url,
                                             delays=("1s", "1500ms")))
        with running_consumer(settings):
            produce(kafka_bootstrap, topic_prefix, [event])
            dead = read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 1, timeout_s=40)
        assert sim.attempts_for(event["event_id"]) == 3
    assert len(dead) == 1
    decoded = h.decode_headers(message_headers(dead[0]))
    assert decoded.dlq_reason == "exhausted"
    assert decoded.attempts == 3
    assert decoded.classification == "transient"
    assert decoded.first_failure_at_ms is not None
    assert decoded.last_failure_at_ms is not None
    assert decoded.last_failure_at_ms - decoded.first_failure_at_ms >= 2500
    assert dead[0].key() == entity_key(event)


def test_retry_after_sends_the_event_to_a_tier_at_least_that_long(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A 429 with Retry-After: 2 skips the 1 s tier and waits in the 2 s tier."""
    event = new_event()
    plan = FailurePlan(fail_first=1, retry_after_s=2, transient_kinds=(TransientKind.RATE_LIMITED,))
    with DownstreamSimulator(plan) as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url,
                                             delays=("1s", "2s", "4s")))
        with running_consumer(settings):
            produce(kafka_bootstrap, topic_prefix, [event])
            assert sim.wait_for(lambda: event["event_id"] in sim.delivered_keys(), 30)
        (gap,) = _gaps(sim, event["event_id"])
        assert 2.0 <= gap <= 3.0
        retried = read_topic(kafka_bootstrap, f"{topic_prefix}.retry.2s", 1)
        assert len(retried) == 1
        assert read_topic(kafka_bootstrap, f"{topic_prefix}.retry.1s", 1, timeout_s=2) == []


def test_same_event_id_published_twice_is_delivered_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Dedup by event_id: a republished event is skipped, within a run and after a restart."""
    event = new_event()
    with DownstreamSimulator() as sim:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=sim.events_url)
        with running_consumer(settings_for(config)) as assembly:
            produce(kafka_bootstrap, topic_prefix, [event, event])
            assert wait_until(lambda: assembly.runner.stats["duplicate"] == 1, 30)
        with running_consumer(settings_for(config)) as assembly:
            produce(kafka_bootstrap, topic_prefix, [event])
            assert wait_until(lambda: assembly.runner.stats["duplicate"] == 1, 30)
        assert sim.attempts_for(event["event_id"]) == 1
        assert sim.duplicate_deliveries() == {}


def test_garbage_bytes_go_to_the_dlq_unchanged_and_consumption_goes_on(
    kafka_bootstrap: str, topic_prefix: str, admin: AdminClient, tmp_path: Path
) -> None:
    """An undecodable record is dead-lettered byte for byte; later events still flow."""
    garbage = b"\x00\x01 definitely not avro \xff"
    after = new_event()
    with DownstreamSimulator() as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url,
                                             partitions=1))
        with running_consumer(settings):
            produce(kafka_bootstrap, topic_prefix, [], raw=[(b"k-1", garbage)])
            produce(kafka_bootstrap, topic_prefix, [after])
            assert sim.wait_for(lambda: after["event_id"] in sim.delivered_keys(), 30)
            dead = read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 1)
    assert len(dead) == 1
    assert dead[0].value() == garbage
    assert dead[0].key() == b"k-1"
    decoded = h.decode_headers(message_headers(dead[0]))
    assert decoded.dlq_reason == "undecodable"
    assert decoded.error_class == "undecodable"
    assert decoded.original_offset == 0


def test_start_up_says_which_topics_it_had_to_create(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelt topics.main would otherwise be consumed quietly: creating topics is logged
    as a warning naming them; a second start, with every topic there, logs nothing."""
    settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix))
    with caplog.at_level("WARNING", logger="clinic_events.app"):
        build_runner(settings).close()
    created = [r.getMessage() for r in caplog.records if r.name == "clinic_events.app"]
    assert len(created) == 1
    assert created[0].startswith(f"created missing topics: {topic_prefix}, ")
    assert f"{topic_prefix}.dlq" in created[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="clinic_events.app"):
        build_runner(settings).close()
    assert [r for r in caplog.records if r.name == "clinic_events.app"] == []
