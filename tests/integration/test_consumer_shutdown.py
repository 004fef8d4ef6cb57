"""Stopping ``clinic-events run``: a second signal stops sooner, nothing is lost, and the
last metric export still reads what it counts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from consumer.dev.simulator import DownstreamSimulator
from consumer.kafka.provisioning import ensure_topics
from consumer.observability.messaging import PARKED_KEYS
from tests.integration.harness import (
    cli_env,
    new_event,
    produce,
    settings_for,
    start_run_process,
    wait_until,
    write_config,
)

EVENTS = 40
CALL_S = 0.3  # every downstream call: 40 queued calls on one lane take 12 s


def test_a_second_sigterm_leaves_queued_records_for_redelivery_and_exits_at_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    # One key: every event queues on the same lane behind a slow downstream.
    events = [new_event(appointment_id="appt-one-key") for _ in range(EVENTS)]
    ids = {str(e["event_id"]) for e in events}
    with DownstreamSimulator(on_request=lambda _request: time.sleep(CALL_S)) as sim:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=sim.events_url, concurrency=2)
        ensure_topics(settings_for(config))
        produce(kafka_bootstrap, topic_prefix, events)

        first = start_run_process(config, tmp_path, "first")
        try:
            assert sim.wait_for(lambda: len(sim.delivered_keys()) >= 2, 60), \
                (tmp_path / "first.log").read_text()
            first.send_signal(signal.SIGTERM)
            # two signals at once would merge into one: send the second once the first is in
            assert sim.wait_for(
                lambda: "draining" in (tmp_path / "first.log").read_text(), 10)
            first.send_signal(signal.SIGTERM)
            hurried_at = time.monotonic()
            code = first.wait(30)
            took = time.monotonic() - hurried_at
        finally:
            if first.poll() is None:
                first.kill()
        log = (tmp_path / "first.log").read_text()
        assert code == 0, log
        assert "received again" in log
        delivered_first = len(set(sim.delivered_keys()))
        assert delivered_first < EVENTS, "the queued records were left, not delivered"
        assert took < (EVENTS - delivered_first) * CALL_S / 2, \
            f"stopped {took:.1f} s after the second signal"

        second = start_run_process(config, tmp_path, "second")
        try:
            assert sim.wait_for(lambda: set(sim.delivered_keys()) == ids, 60), \
                (tmp_path / "second.log").read_text()
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0
        assert sim.duplicate_deliveries() == {}


def test_a_signal_after_the_clean_stop_does_not_change_the_exit_code(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """An operator's second Ctrl-C or SIGTERM can land after ``run`` has stopped cleanly,
    while the interpreter exits: the process still exits 0, not killed by the signal."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix)
    ensure_topics(settings_for(config))
    log_file = tmp_path / "run.log"
    process = start_run_process(config, tmp_path, "run")
    try:
        assert wait_until(lambda: "assigned" in log_file.read_text(), 60), log_file.read_text()
        process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "stopped cleanly" in log_file.read_text()
                          or process.poll() is not None, 60, interval_s=0.01)
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, log_file.read_text()


def test_the_last_metric_export_at_a_stop_still_reads_the_dedup_store(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The export at shutdown collects every gauge once more, the parked keys counted in the
    dedup store among them: the store must still be open then."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix)
    ensure_topics(settings_for(config))
    log_file = tmp_path / "run.log"
    env = {**cli_env(tmp_path), "OTEL_METRICS_EXPORTER": "console"}
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config),
             "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        assert wait_until(lambda: "assigned" in log_file.read_text(), 60), log_file.read_text()
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    output = log_file.read_text()
    assert code == 0, output
    assert "could not count parked keys" not in output
    assert PARKED_KEYS in output, "the console exporter printed the gauge at shutdown"
