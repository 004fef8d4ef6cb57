"""DLQ replay closes the loop: a replayed event is delivered by the running consumer."""

from __future__ import annotations

from pathlib import Path

from consumer.dev.simulator import DownstreamSimulator, FailurePlan
from consumer.kafka.clients import message_headers
from retry_topics import headers as h
from tests.integration.harness import (
    new_event,
    produce,
    read_topic,
    run_cli,
    running_consumer,
    settings_for,
    write_config,
)


def test_replayed_dead_letter_is_delivered_and_others_stay_put(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """After the downstream is fixed, replaying one event by id gets exactly it delivered."""
    fixed_later, left_alone = new_event(), new_event("appointment.cancelled")
    rejected = frozenset({str(fixed_later["event_id"]), str(left_alone["event_id"])})
    with DownstreamSimulator(FailurePlan(permanent_keys=rejected)) as broken:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=broken.events_url)
        with running_consumer(settings_for(config)):
            produce(kafka_bootstrap, topic_prefix, [fixed_later, left_alone])
            assert len(read_topic(kafka_bootstrap, f"{topic_prefix}.dlq", 2)) == 2

    with DownstreamSimulator() as healthy:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=healthy.events_url)
        with running_consumer(settings_for(config)):
            replay = run_cli(tmp_path, "dlq", "replay", "--config", str(config),
                             "--event-id", str(fixed_later["event_id"]), "--json")
            assert replay.returncode == 0, replay.stderr
            assert healthy.wait_for(
                lambda: str(fixed_later["event_id"]) in healthy.delivered_keys(), 30)
        assert healthy.delivered_keys() == [str(fixed_later["event_id"])]

    main_records = read_topic(kafka_bootstrap, topic_prefix, 3)
    replayed = [m for m in main_records
                if h.decode_headers(message_headers(m)).replay_count == 1]
    assert len(replayed) == 1
    assert h.decode_headers(message_headers(replayed[0])).event_id == fixed_later["event_id"]
