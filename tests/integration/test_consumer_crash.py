"""Crash safety: SIGKILL mid-stream loses nothing and re-applies nothing already recorded."""

from __future__ import annotations

import signal
from pathlib import Path

from consumer.dedup.sqlite import SqliteDedupStore
from consumer.dev.simulator import DownstreamSimulator
from consumer.kafka.provisioning import ensure_topics
from tests.integration.harness import (
    new_event,
    produce,
    settings_for,
    start_run_process,
    write_config,
)

EVENTS = 1000
TTL_MS = 7 * 24 * 3_600_000


def _recorded(database: Path, ids: set[str]) -> set[str]:
    """The ids of ``ids`` the store on disk records as delivered (read beside the writer)."""
    store = SqliteDedupStore(database, TTL_MS, read_only=True)
    try:
        return {eid for eid, outcome in store.lookup(sorted(ids)).items()
                if outcome == "delivered"}
    finally:
        store.close()


def test_sigkill_mid_stream_then_restart_loses_nothing_and_repeats_nothing_recorded(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Killed with SIGKILL half way, a restarted consumer delivers the rest exactly as needed."""
    events = [new_event() for _ in range(EVENTS)]
    ids = {str(e["event_id"]) for e in events}
    with DownstreamSimulator() as sim:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=sim.events_url, concurrency=2)
        database = tmp_path / f"dedup-{topic_prefix}.sqlite3"
        ensure_topics(settings_for(config))
        produce(kafka_bootstrap, topic_prefix, events)

        first = start_run_process(config, tmp_path, "first")
        try:
            assert sim.wait_for(lambda: len(sim.delivered_keys()) >= EVENTS // 4, 60), \
                (tmp_path / "first.log").read_text()
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        recorded_before_restart = _recorded(database, ids)
        delivered_before_restart = len(sim.delivered_keys())
        assert 0 < delivered_before_restart < EVENTS, "the kill must land mid-stream"

        second = start_run_process(config, tmp_path, "second")
        try:
            assert sim.wait_for(lambda: set(sim.delivered_keys()) == ids, 90), \
                (tmp_path / "second.log").read_text()[-3000:]
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0, "SIGTERM drains, commits and exits 0"

        # No event lost: every event reached the downstream.
        assert set(sim.delivered_keys()) == ids
        # No event whose outcome was recorded was handed to the downstream again.
        repeated = set(sim.duplicate_deliveries())
        assert not repeated & recorded_before_restart
        assert all(sim.attempts_for(key) == 1 for key in recorded_before_restart)
        # Only events delivered but not yet recorded at the kill may have been re-sent.
        assert len(repeated) <= delivered_before_restart - len(recorded_before_restart)
        assert _recorded(database, ids) == ids
