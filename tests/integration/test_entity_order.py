"""Order per entity on a real broker: an appointment's events reach the chart in published
order although the first one waits in a retry tier, across a SIGKILL and across a rebalance
of two instances sharing Redis (issue 15, part 1).

The downstream is a small EHR-like chart: it honours ``Idempotency-Key`` (a repeated key is
answered 200 and changes nothing), answers each ``appointment.scheduled`` 503 the first time,
and notes the order in which it applied each appointment's events. The breaker is off: every
first call of the scenario fails, which is an outage to the breaker, and this test is about
order, not outages (``test_system_failures.py`` covers those).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from consumer.cli.wiring import Assembly
from consumer.dedup.sqlite import SqliteDedupStore
from consumer.dedup.store import RedisDedupStore
from consumer.kafka.provisioning import ensure_topics
from tests.integration.harness import (
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

APPOINTMENTS = 20
LIFECYCLE = ("appointment.scheduled", "appointment.rescheduled", "appointment.cancelled")
DELAYS = ("1s", "2s", "4s")
NO_BREAKER = "[breaker]\nenabled = false\n"
TTL_MS = 7 * 24 * 3_600_000


class Chart:
    """The downstream: applies events per appointment, once per Idempotency-Key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: dict[str, list[str]] = {}  # appointment id -> event types, in order
        self.keys: set[str] = set()
        self.refused: set[str] = set()
        self.rejected: set[str] = set()  # appointments whose scheduled is 422 after the 503
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/events"

    def answer(self, key: str, body: dict[str, Any]) -> int:
        with self.lock:
            if key in self.keys:
                return 200  # a repeat: already applied, nothing changes
            event_type = str(body["event_type"])
            if event_type == "appointment.scheduled" and key not in self.refused:
                self.refused.add(key)
                return 503
            if event_type == "appointment.scheduled" and \
                    body["payload"]["appointment_id"] in self.rejected:
                return 422
            self.keys.add(key)
            self.applied.setdefault(str(body["payload"]["appointment_id"]), []).append(
                event_type)
            return 200

    def done(self, appointments: int) -> bool:
        with self.lock:
            return len(self.keys) == appointments * len(LIFECYCLE)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        chart = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = chart.answer(self.headers["Idempotency-Key"], body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler

    def __enter__(self) -> Chart:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chart() -> Iterator[Chart]:
    with Chart() as opened:
        yield opened


def _appointments(topic: str) -> list[str]:
    return [f"appt-{n}-{topic[-6:]}" for n in range(APPOINTMENTS)]


def _publish_lifecycles(bootstrap: str, topic: str, ids: list[str]) -> None:
    """Every appointment's three events, published round by round (each round acknowledged
    before the next: the published order per appointment is the lifecycle's)."""
    for event_type in LIFECYCLE:
        produce(bootstrap, topic, [new_event(event_type, appointment_id=appointment)
                                   for appointment in ids])


def _assert_in_order(chart: Chart, ids: list[str]) -> None:
    with chart.lock:
        out_of_order = {appointment: chart.applied.get(appointment)
                        for appointment in ids if chart.applied.get(appointment) != list(LIFECYCLE)}
    assert not out_of_order, f"applied out of order: {out_of_order}"


def _parked_keys_sqlite(database: Path) -> int:
    store = SqliteDedupStore(database, TTL_MS, read_only=True)
    try:
        return store.parked_summary().keys
    finally:
        store.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_each_appointment_is_applied_in_published_order_across_a_retry_hop(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, chart: Chart
) -> None:
    """20 appointments scheduled -> rescheduled -> cancelled, scheduled answered 503 once:
    every chart applies the three in published order and ends cancelled."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          url=chart.url, delays=DELAYS, extra=NO_BREAKER)
    settings = settings_for(config)
    ensure_topics(settings)
    ids = _appointments(topic_prefix)
    _publish_lifecycles(kafka_bootstrap, topic_prefix, ids)
    with running_consumer(settings) as assembly:
        assert wait_until(lambda: chart.done(APPOINTMENTS), 45), chart.applied
        assert wait_until(lambda: assembly.store.parked_summary().keys == 0, 10)
        parked = assembly.runner.stats["parked"]
    _assert_in_order(chart, ids)
    assert parked >= APPOINTMENTS, "the later events were parked, not delivered early"


def test_order_holds_across_a_sigkill_while_keys_are_parked(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, chart: Chart
) -> None:
    """Killed with SIGKILL while keys are parked, a restarted consumer loses nothing and
    still applies every appointment in order."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          url=chart.url, delays=("2s", "4s"), extra=NO_BREAKER)
    ensure_topics(settings_for(config))
    database = tmp_path / f"dedup-{topic_prefix}.sqlite3"
    ids = _appointments(topic_prefix)
    _publish_lifecycles(kafka_bootstrap, topic_prefix, ids)
    first = start_run_process(config, tmp_path, "first")
    try:
        assert wait_until(lambda: database.exists() and _parked_keys_sqlite(database) > 0, 40,
                          interval_s=0.1), (tmp_path / "first.log").read_text()[-3000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert not chart.done(APPOINTMENTS), "the kill must land while keys wait"
    second = start_run_process(config, tmp_path, "second")
    try:
        assert wait_until(lambda: chart.done(APPOINTMENTS), 50), \
            (tmp_path / "second.log").read_text()[-3000:]
        assert wait_until(lambda: _parked_keys_sqlite(database) == 0, 10)
    finally:
        _stop(second)
    _assert_in_order(chart, ids)


def test_order_holds_across_a_rebalance_of_two_instances_sharing_redis(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, chart: Chart, redis_url: str
) -> None:
    """Two instances share the work and one Redis; one is killed while keys are parked and
    the other takes its partitions over (a rebalance): every appointment is still applied
    in order, and nothing is lost."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          url=chart.url, delays=("1s", "2s"), partitions=4, extra=NO_BREAKER)
    text = config.read_text()
    sqlite_line = next(line for line in text.splitlines() if line.startswith("store = "))
    config.write_text(text.replace(sqlite_line, f'store = "{redis_url}"'))
    ensure_topics(settings_for(config))
    redis_store = RedisDedupStore(redis_url, TTL_MS)
    ids = _appointments(topic_prefix)
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}

    def assignments(name: str) -> int:
        return logs[name].read_text().count("assigned ") if logs[name].exists() else 0

    first = start_run_process(config, tmp_path, "first")
    second = start_run_process(config, tmp_path, "second")
    try:
        assert wait_until(lambda: assignments("first") > 0 < assignments("second"), 40,
                          interval_s=0.1), logs["first"].read_text()[-2000:]
        settled = assignments("second")
        _publish_lifecycles(kafka_bootstrap, topic_prefix, ids)
        assert wait_until(lambda: any(redis_store.chains(ids).values()), 30, interval_s=0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert wait_until(lambda: chart.done(APPOINTMENTS), 50), \
            logs["second"].read_text()[-3000:]
        assert assignments("second") > settled, "the survivor took the partitions over"
        assert wait_until(lambda: not redis_store.chains(ids), 10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        _stop(second)
        redis_store.close()
    _assert_in_order(chart, ids)


@dataclass
class HeldHead:
    """An appointment whose scheduled event the downstream rejects for good after a hop,
    its rescheduled and cancelled events parked behind it and following it to the DLQ."""

    config: Path
    assembly: Assembly
    appointment: str
    events: list[dict[str, Any]]
    dlq: str


@contextmanager
def _held_head_with_followers(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
                              chart: Chart, name: str) -> Iterator[HeldHead]:
    """A consumer running (hold, one 1 s tier) with all three of one appointment's events
    in the DLQ, the head first."""
    config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                          url=chart.url, delays=("1s",), partitions=1, extra=NO_BREAKER)
    settings = settings_for(config)
    ensure_topics(settings)
    appointment = f"appt-{name}-{topic_prefix[-6:]}"
    chart.rejected.add(appointment)
    events = [new_event(event_type, appointment_id=appointment) for event_type in LIFECYCLE]
    dlq = f"{topic_prefix}.dlq"
    with running_consumer(settings) as assembly:
        for event in events:  # one at a time: the published order is the lifecycle's
            produce(kafka_bootstrap, topic_prefix, [event])
        assert len(read_topic(kafka_bootstrap, dlq, 3)) == 3
        yield HeldHead(config, assembly, appointment, events, dlq)


def test_a_discarded_head_lets_its_followers_be_replayed_in_order(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, chart: Chart
) -> None:
    """scheduled is rejected for good after a hop, and its followers follow it to the DLQ
    (hold); `dlq discard` of scheduled releases the key, so a replay of the rest applies
    rescheduled, then cancelled, instead of sending them back behind the discarded head."""
    with _held_head_with_followers(kafka_bootstrap, topic_prefix, tmp_path, chart,
                                   "discard") as held:
        store, appointment, events = held.assembly.store, held.appointment, held.events
        assert wait_until(lambda: len(store.chains([appointment]).get(appointment, [])) == 3,
                          10)
        discard = run_cli(tmp_path, "dlq", "discard", "--config", str(held.config),
                          "--event-id", str(events[0]["event_id"]), "--reason",
                          "cancelled upstream", "--json")
        assert discard.returncode == 0, discard.stderr
        assert [link.event_id for link in store.chains([appointment])[appointment]] \
            == [str(event["event_id"]) for event in events[1:]]
        replay = run_cli(tmp_path, "dlq", "replay", "--config", str(held.config), "--json")
        assert replay.returncode == 0, replay.stderr
        assert json.loads(replay.stdout)["counts"]["replayed"] == 2
        assert wait_until(lambda: chart.applied.get(appointment) == list(LIFECYCLE[1:]), 30), \
            chart.applied
        assert wait_until(lambda: store.parked_summary().keys == 0, 10)
    assert len(read_topic(kafka_bootstrap, held.dlq, 3)) == 3, "no follower went back to the DLQ"


def test_a_replay_of_the_held_head_takes_its_parked_followers_along_in_order(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, chart: Chart
) -> None:
    """scheduled is rejected (422) after a hop and its followers follow it to the DLQ
    (hold); once the downstream accepts it, `dlq replay --error-class http.422` (it selects
    the head only) replays rescheduled and cancelled right after it, and all three apply
    in order, leaving nothing in the DLQ open."""
    with _held_head_with_followers(kafka_bootstrap, topic_prefix, tmp_path, chart,
                                   "held") as held:
        config = str(held.config)
        listed = run_cli(tmp_path, "dlq", "list", "--config", config, "--json")
        head = [str(held.events[0]["event_id"])]
        assert {(g["error_class"], g["event_type"]): (g["count"], g["parked_behind"])
                for g in json.loads(listed.stdout)["groups"]} == {
            ("http.422", LIFECYCLE[0]): (1, []), ("(parked)", LIFECYCLE[1]): (1, head),
            ("(parked)", LIFECYCLE[2]): (1, head)}
        chart.rejected.discard(held.appointment)
        replay = run_cli(tmp_path, "dlq", "replay", "--config", config, "--error-class",
                         "http.422", "--json")
        assert replay.returncode == 0, replay.stderr
        counts = json.loads(replay.stdout)["counts"]
        assert (counts["replayed"], counts["parked_followers"]) == (3, 2)
        assert wait_until(lambda: chart.applied.get(held.appointment) == list(LIFECYCLE), 30), \
            chart.applied
        assert wait_until(lambda: held.assembly.store.parked_summary().keys == 0, 10)
    left = run_cli(tmp_path, "dlq", "list", "--config", config, "--json")
    assert json.loads(left.stdout)["total"] == 0
    assert len(read_topic(kafka_bootstrap, held.dlq, 3)) == 3, "no follower went back to the DLQ"
