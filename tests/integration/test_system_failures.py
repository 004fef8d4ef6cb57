"""A failing system on the real broker: a 45 s outage, and a misconfigured delivery.url."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.delivery.handlers import DeliveryContext
from consumer.dev.simulator import DownstreamSimulator, FailurePlan
from consumer.errors import TransientError
from retry_topics.naming import dlq_topic_name
from tests.integration.harness import (
    header,
    new_event,
    produce,
    read_topic,
    run_cli,
    running_consumer,
    settings_for,
    start_run_process,
    wait_until,
    write_config,
)

OUTAGE_S = 45.0


class FlakyEhr:
    """Answers 503 to everything until ``recovered_at``, then delivers; notes each call."""

    def __init__(self, outage_s: float) -> None:
        self.recovered_at = time.monotonic() + outage_s
        self._lock = threading.Lock()
        self.calls: list[tuple[float, bool]] = []  # (when, breaker open at the call)
        self.delivered: dict[str, float] = {}
        self.breaker_open: Callable[[], bool] = lambda: False

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        now = time.monotonic()
        with self._lock:
            self.calls.append((now, self.breaker_open()))
        if now < self.recovered_at:
            raise TransientError("POST /events answered 503", error_class="http.503")
        with self._lock:
            self.delivered.setdefault(context.event_id, now)

    def close(self) -> None:
        """Nothing to release."""


def test_a_45_second_outage_dead_letters_nothing_and_probes_gently(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """While the EHR answers 503 to everything for 45 s, events keep arriving: none is
    dead-lettered, the breaker lets at most a call a second through on average, and every
    event is delivered within 10 s of recovery (retry delays 1 s, 2 s, 4 s would have
    dead-lettered them all in 7 s)."""
    settings = settings_for(write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                                         delays=("1s", "2s", "4s")))
    ehr = FlakyEhr(OUTAGE_S)
    events = [new_event() for _ in range(40)]
    with running_consumer(settings, handler=ehr) as assembly:
        ehr.breaker_open = lambda: assembly.runner.downstream.open
        for batch in range(4):  # ten at a time, through the outage
            produce(kafka_bootstrap, topic_prefix, events[batch * 10:(batch + 1) * 10])
            time.sleep(8)
        assert wait_until(lambda: len(ehr.delivered) == len(events), OUTAGE_S + 30)
        assert assembly.runner.stats["dead_lettered"] == 0
    while_open = [when for when, opened in ehr.calls if opened and when < ehr.recovered_at]
    if while_open:
        span = ehr.recovered_at - while_open[0]
        assert len(while_open) <= max(1.0, span), \
            f"{len(while_open)} calls in {span:.0f} s with the breaker open"
    assert max(ehr.delivered.values()) - ehr.recovered_at <= 10.0
    assert read_topic(kafka_bootstrap, dlq_topic_name(topic_prefix), 1, timeout_s=2) == []


def test_every_call_answering_404_halts_at_the_limit_and_resumes_after_the_fix(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """delivery.url points at a wrong path: at most 20 dead letters, then `run` halts and
    says why, and `lag` shows STOP with that reason; with the URL fixed and `run` restarted,
    every other event is delivered."""
    events = [new_event() for _ in range(300)]
    with DownstreamSimulator(FailurePlan()) as simulator:
        base = simulator.events_url.rsplit("/", 1)[0]
        wrong = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                             url=f"{base}/wrong-path")
        assert run_cli(tmp_path, "topics", "ensure", "--config", str(wrong)).returncode == 0
        produce(kafka_bootstrap, topic_prefix, events)
        run = start_run_process(wrong, tmp_path, "wrong")
        log = tmp_path / "wrong.log"
        try:
            assert wait_until(lambda: "dead letters halted" in log.read_text(), 60), \
                log.read_text()[-2000:]
            time.sleep(2)  # halted: nothing more may be dead-lettered meanwhile
            lag = run_cli(tmp_path, "lag", "--config", str(wrong), "--json", "--no-history")
            assert lag.returncode == 3, lag.stderr  # STOP
            system = json.loads(lag.stdout)["system"]
            assert system["status"] == "STOP"
            assert "check delivery.url" in system["reasons"][0]
        finally:
            run.terminate()
            run.wait(30)
        halt_line = next(line for line in log.read_text().splitlines()
                         if "dead letters halted" in line)
        assert "404" in halt_line
        assert "check delivery.url" in halt_line
        dead = read_topic(kafka_bootstrap, dlq_topic_name(topic_prefix), 300, timeout_s=5)
        # At most the limit's worth. Fewer when the stop came while a dead letter's hop
        # waited for an earlier record of its partition, held by the halt: its hop commits
        # only with the offset that settles it, so the stop drops it, and the event is
        # processed afresh after the restart.
        assert 0 < len(dead) <= 20
        dead_ids = {(header(m, "clinic.event-id") or b"").decode() for m in dead}
        assert len(dead_ids) == len(dead)

        fixed = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                             url=simulator.events_url)
        run = start_run_process(fixed, tmp_path, "fixed")
        try:
            assert wait_until(lambda: len(simulator.delivered_keys()) >= 300 - len(dead), 90)
        finally:
            run.terminate()
            run.wait(30)
        delivered = set(simulator.delivered_keys())
    # every event has exactly one fate: dead-lettered or, after the fix, delivered
    assert delivered == {str(event["event_id"]) for event in events} - dead_ids
