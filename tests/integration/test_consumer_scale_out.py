"""Two consumer instances sharing Redis dedup: the work is split, nothing lost or doubled."""

from __future__ import annotations

import time
from pathlib import Path

from consumer.dev.simulator import DownstreamSimulator
from consumer.kafka.provisioning import ensure_topics
from tests.integration.harness import (
    new_event,
    produce,
    running_consumer,
    settings_for,
    wait_until,
    write_config,
)

EVENTS = 600


def test_two_instances_share_the_work_and_one_leaving_mid_stream_loses_nothing(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, redis_url: str
) -> None:
    """Two instances split the partitions; when one leaves mid-stream the other takes over."""
    events = [new_event() for _ in range(EVENTS)]
    ids = {str(e["event_id"]) for e in events}
    # ~20 ms per request keeps the stream going long enough for the hand-over to land in it.
    with DownstreamSimulator(on_request=lambda _request: time.sleep(0.02)) as sim:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=sim.events_url, partitions=6, concurrency=2)
        config.write_text(config.read_text().replace(
            f'store = "sqlite:///{tmp_path}/dedup-{topic_prefix}.sqlite3"',
            f'store = "{redis_url}"'))
        settings = settings_for(config)
        assert settings.dedup.store.startswith("redis://")
        ensure_topics(settings)
        main_partitions = {(topic_prefix, p) for p in range(6)}
        with running_consumer(settings) as staying:
            with running_consumer(settings) as leaving:
                def split() -> bool:
                    owned = [a.runner.assignment & main_partitions for a in (staying, leaving)]
                    return all(owned) and owned[0] | owned[1] == main_partitions

                assert wait_until(split, 30), "both instances own main partitions"
                produce(kafka_bootstrap, topic_prefix, events)
                assert sim.wait_for(lambda: len(sim.delivered_keys()) >= EVENTS // 3, 60)
            # `leaving` drained, committed and left; `staying` takes over its partitions.
            assert sim.wait_for(lambda: set(sim.delivered_keys()) == ids, 120)

            def counted() -> tuple[int, int]:
                return (staying.runner.stats["delivered"], leaving.runner.stats["delivered"])

            assert wait_until(lambda: sum(counted()) == EVENTS, 30), counted()
        assert set(sim.delivered_keys()) == ids
        assert sim.duplicate_deliveries() == {}
        assert all(counted()), f"both instances delivered part of the work: {counted()}"
