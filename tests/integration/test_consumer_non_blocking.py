"""Non-blocking delays: a paused retry partition holds back nothing but its own head."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Producer

from consumer.dev.simulator import DownstreamSimulator, FailurePlan
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
    write_config,
)

DELAY_S = 6.0


def test_paused_retry_partition_does_not_delay_other_partitions_or_the_main_topic(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """While one tier partition waits for its head, its sibling partition and main flow."""
    waiting = new_event()
    with DownstreamSimulator(FailurePlan(fail_first=1)) as sim:
        settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap,
                                             main=topic_prefix, url=sim.events_url,
                                             delays=(f"{int(DELAY_S)}s",), partitions=2))
        tier_topic = settings.retry.tiers[0].topic
        with running_consumer(settings):
            produce(kafka_bootstrap, topic_prefix, [waiting])
            (parked,) = read_topic(kafka_bootstrap, tier_topic, 1)
            due_at_ms = h.decode_headers(message_headers(parked)).due_at_ms
            assert due_at_ms is not None
            other_partition = 1 - int(parked.partition() or 0)

            # A record already due, on the sibling partition of the same tier topic.
            sibling = new_event()
            producer = Producer({"bootstrap.servers": kafka_bootstrap})
            producer.produce(tier_topic, partition=other_partition, key=entity_key(sibling),
                             value=EventCodec().encode(sibling),
                             headers=[(h.ATTEMPTS, b"1"),
                                      (h.DUE_AT, str(int(time.time() * 1000)).encode())])
            assert producer.flush(10) == 0
            # And a fresh event on the main topic: it must reach the downstream (its first
            # request fails by the plan, which does not matter here) while the head waits.
            fresh = new_event()
            produce(kafka_bootstrap, topic_prefix, [fresh])

            def reached(event: dict[str, object]) -> bool:
                return sim.attempts_for(str(event["event_id"])) >= 1

            assert sim.wait_for(lambda: reached(sibling) and reached(fresh), DELAY_S - 2)
            assert time.time() * 1000 < due_at_ms, "both were handled while the head waited"
            assert sim.attempts_for(str(waiting["event_id"])) == 1

            assert sim.wait_for(lambda: str(waiting["event_id"]) in sim.delivered_keys(),
                                DELAY_S + 5)
        retried_at = [r.wall_ms for r in sim.requests()
                      if r.idempotency_key == waiting["event_id"]][-1]
        assert retried_at >= due_at_ms, "never before its due time"
        assert retried_at - due_at_ms <= 1000
