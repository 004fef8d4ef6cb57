"""Changing ``[retry] delays``: records already waiting in an old tier are not stranded."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.dev.simulator import DownstreamSimulator, FailurePlan
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from consumer.kafka.clients import message_headers
from consumer.kafka.provisioning import ensure_topics
from retry_topics.headers import RecordHeaders, decode_headers, encode_headers
from tests.integration.harness import (
    new_event,
    read_topic,
    run_cli,
    running_consumer,
    settings_for,
    write_config,
)


def test_run_drains_a_tier_the_delays_no_longer_include_and_lag_lists_it(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Delays 1s, 30s become 1s, 1m: the records waiting in the 30s tier are still
    delivered, or, failing again with attempts left, go on to the next longer tier (1m)."""
    old = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                                    delays=("1s", "30s")))
    ensure_topics(old)
    old_tier = old.retry.retry_topics[1]
    fixed, still_failing = new_event(), new_event("appointment.cancelled")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    now_ms = time.time_ns() // 1_000_000
    # attempts made: 2 (main, 1s) for one; 1 for the other, as if 30s had been the first tier
    for event, attempts in ((fixed, 2), (still_failing, 1)):
        headers = RecordHeaders(attempts=attempts, due_at_ms=now_ms,
                                event_id=str(event["event_id"]))
        producer.produce(old_tier, key=entity_key(event), value=EventCodec().encode(event),
                         headers=[*encode_headers(headers)])
    assert producer.flush(30) == 0

    plan = FailurePlan(always_fail_keys=frozenset({str(still_failing["event_id"])}))
    caplog.set_level(logging.WARNING, logger="clinic_events.app")
    with DownstreamSimulator(plan) as sim:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=sim.events_url, delays=("1s", "1m"))
        new = settings_for(config)
        with running_consumer(new):
            assert sim.wait_for(lambda: str(fixed["event_id"]) in sim.delivered_keys(), 30)
            (moved,) = read_topic(kafka_bootstrap, new.retry.retry_topics[1], 1, timeout_s=30)
        lag = run_cli(tmp_path, "lag", "--config", str(config), "--json", "--no-history")

    assert any(r.getMessage().startswith(f"consuming {old_tier} too: [retry] delays (1s, 1m) "
                                         "no longer include it")
               for r in caplog.records), caplog.text
    headers = decode_headers(message_headers(moved))
    assert (headers.event_id, headers.attempts) == (still_failing["event_id"], 2)
    assert lag.returncode in (0, 1, 3), lag.stderr  # no ERR: the old tier is consumed
    document = json.loads(lag.stdout)
    (leftover,) = [t for t in document["topics"] if t["topic"] == old_tier]
    assert (leftover["configured"], leftover["lag"]) == (False, 0)
