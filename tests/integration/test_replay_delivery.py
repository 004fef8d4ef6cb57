"""DLQ replay closes the loop: a replayed event is delivered by the running consumer."""

from __future__ import annotations

import json
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


def test_replayed_dead_letter_is_delivered_and_the_next_replay_delivers_the_rest(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """After the downstream is fixed, replaying one event by id gets exactly it delivered; a
    replay without filters then delivers the other one, and a third replays nothing."""
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
            rest = run_cli(tmp_path, "dlq", "replay", "--config", str(config), "--json")
            assert rest.returncode == 0, rest.stderr
            assert json.loads(rest.stdout)["counts"]["replayed"] == 1
            assert healthy.wait_for(lambda: len(healthy.delivered_keys()) == 2, 30)
            third = run_cli(tmp_path, "dlq", "replay", "--config", str(config), "--json")
            assert json.loads(third.stdout)["counts"]["replayed"] == 0
        assert sorted(healthy.delivered_keys()) == sorted(
            str(e["event_id"]) for e in (fixed_later, left_alone))

    main_records = read_topic(kafka_bootstrap, topic_prefix, 4)
    replayed = [h.decode_headers(message_headers(m)).event_id for m in main_records
                if h.decode_headers(message_headers(m)).replay_count == 1]
    assert sorted(map(str, replayed)) == sorted(
        str(e["event_id"]) for e in (fixed_later, left_alone))
