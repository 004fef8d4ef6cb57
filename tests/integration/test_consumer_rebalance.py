"""A rebalance while retry partitions wait for their heads: the records still run when due."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from consumer.config.settings import Settings
from consumer.dev.simulator import DownstreamSimulator, FailurePlan
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

DELAY_S = 10
EVENTS = 6


@contextmanager
def group_member(settings: Settings) -> Iterator[Consumer]:
    """Another member of the consumer group, which only joins (it processes nothing, commits
    nothing) and leaves at the end of the block: two rebalances for the runner."""
    member = Consumer(settings.consumer_config(**{
        "group.id": settings.kafka.group_id, "enable.auto.commit": False,
        "auto.offset.reset": "earliest"}))
    assigned: list[TopicPartition] = []
    member.subscribe([settings.retry.main_topic, *settings.retry.retry_topics],
                     on_assign=lambda _c, partitions: assigned.extend(partitions))
    try:
        assert wait_until(lambda: member.poll(0.1) is not None or bool(assigned), 30), \
            "the second member joined the group"
        yield member
    finally:
        member.close()


def test_retry_partitions_waiting_through_a_rebalance_run_when_due(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A partition revoked while paused and assigned back is fetched again, never early.

    librdkafka keeps a paused partition paused across a revoke and a new assignment; the
    runner forgets a revoked partition's due time, so without a resume on assignment the
    records in it waited until the process restarted.
    """
    events = [new_event() for _ in range(EVENTS)]
    ids = {str(e["event_id"]) for e in events}
    with DownstreamSimulator(FailurePlan(fail_first=1)) as sim:
        # Every event's first call fails with 503: to the breaker that is an outage, and
        # the events would wait for it to close instead of parking in the tier this test
        # watches through a rebalance.
        settings = settings_for(write_config(
            tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix, url=sim.events_url,
            delays=(f"{DELAY_S}s",), partitions=2, extra="[breaker]\nenabled = false"))
        tier_topic = settings.retry.tiers[0].topic
        everything = {(topic, p) for topic in (topic_prefix, tier_topic) for p in range(2)}
        with running_consumer(settings) as assembly:
            runner = assembly.runner
            produce(kafka_bootstrap, topic_prefix, events)
            parked = read_topic(kafka_bootstrap, tier_topic, EVENTS)
            assert len(parked) == EVENTS
            due_at_ms = {h.decode_headers(message_headers(m)).event_id:
                         h.decode_headers(message_headers(m)).due_at_ms for m in parked}
            waiting = {(tier_topic, int(m.partition() or 0)) for m in parked}
            assert wait_until(lambda: waiting <= runner.waiting, DELAY_S / 2), \
                f"the runner paused {waiting} until due: {runner.waiting}"

            with group_member(settings):
                assert wait_until(lambda: runner.assignment != everything, 30), \
                    "the runner gave partitions up to the new member"
            assert wait_until(lambda: runner.assignment == everything, 30), \
                "the runner owns every partition again"

            assert sim.wait_for(lambda: set(sim.delivered_keys()) == ids, DELAY_S + 15), \
                f"delivered {len(set(sim.delivered_keys()) & ids)} of {EVENTS}"
        assert sim.duplicate_deliveries() == {}
        for request in sim.requests():
            if request.idempotency_key in ids and request.status < 300:
                due = due_at_ms[request.idempotency_key]
                assert due is not None
                assert request.wall_ms >= due, "never before its due time"
