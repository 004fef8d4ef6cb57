"""Exactly-once hops on the real broker (issue 17): no event gets a second fate after a crash.

Three proofs, each with ``clinic-events run`` as its own process, killed with SIGKILL:

* **The dead-letter window** (part 1): an instance is killed the moment its dead letter
  becomes visible to a ``read_committed`` reader. Whether the downstream then recovers or
  keeps failing, the restarted instance must not give the event a second fate (a delivery
  beside the dead letter, or a second dead letter). With each hop produced in one Kafka
  transaction with the source offset it settles, a visible dead letter means its source
  offset is committed too.
* **The lane window** (part 2): an event delivered while its lane's next call is slow is
  recorded at once, so a kill during that next call does not make the downstream see it again.
* **A bounded chaos run**: three instances sharing a Redis dedup store, a flaky downstream,
  SIGKILLs at seeded random moments and a restart of a broker of this test's own; at the end
  every invariant of the guarantee is checked on what Kafka and the downstream hold.
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from consumer.config.settings import Settings
from consumer.dev.local_kafka import LocalKafka
from consumer.dev.simulator import (
    DownstreamSimulator,
    FailurePlan,
    SimulatedRequest,
    TransientKind,
)
from consumer.events.codec import EventCodec
from consumer.events.model import entity_key
from consumer.kafka.group_offsets import GroupOffsets, GroupQueryError
from consumer.kafka.provisioning import ensure_topics
from retry_topics.headers import EVENT_ID, PARKED_BEHIND
from retry_topics.naming import dlq_topic_name
from tests.integration.harness import (
    header,
    new_event,
    produce,
    settings_for,
    start_run_process,
    wait_until,
    write_config,
)
from tests.unit.sample_events import sample_event

# -- helpers -------------------------------------------------------------------------------


def _set_line(config: Path, prefix: str, line: str) -> None:
    """Replace the config line starting with ``prefix`` (what ``write_config`` cannot set)."""
    text = config.read_text().splitlines()
    assert any(row.startswith(prefix) for row in text), f"no {prefix!r} line in {config}"
    config.write_text("\n".join(line if row.startswith(prefix) else row for row in text) + "\n")


def _reader(bootstrap: str, **extra: Any) -> Consumer:
    """A consumer that reads what a ``read_committed`` client may see, joining no group."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                     "enable.auto.commit": False, "isolation.level": "read_committed",
                     "fetch.wait.max.ms": 10, **extra})


def _partitions(consumer: Consumer, topics: Sequence[str]) -> list[TopicPartition]:
    metadata = consumer.list_topics(timeout=10)
    return [TopicPartition(topic, partition, OFFSET_BEGINNING)
            for topic in topics for partition in sorted(metadata.topics[topic].partitions)]


def read_committed(bootstrap: str, topics: Sequence[str], timeout_s: float = 30) -> list[Message]:
    """Every committed record of ``topics``, read from the start to the end of each partition.

    "The end" is the high watermark when the read starts: a partition is done once the
    reader reports its end at or past it. A transaction left open (by a killed producer
    nobody fenced) holds the end a ``read_committed`` reader reaches below it, so the read
    fails with the partitions held rather than returning what it saw so far.
    """
    consumer = _reader(bootstrap, **{"enable.partition.eof": True})
    try:
        tps = _partitions(consumer, topics)
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in tps}
        pending = {key for key, end in ends.items() if end > 0}
        consumer.assign(tps)
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                error = message.error()
                key = (str(message.topic()), int(message.partition() or 0))
                if error is None:
                    messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    if int(message.offset() or 0) >= ends[key]:
                        pending.discard(key)
                else:
                    raise AssertionError(f"reading {key}: {error}")
        assert not pending, (f"partitions not read to their end within {timeout_s:g} s "
                             f"(an open transaction?): {sorted(pending)}")
        return messages
    finally:
        consumer.close()


class DeadLetterTail:
    """Follows a DLQ from its start as a ``read_committed`` reader, noting each event id."""

    def __init__(self, bootstrap: str, dlq: str) -> None:
        self._consumer = _reader(bootstrap)
        self._consumer.assign(_partitions(self._consumer, [dlq]))
        self.event_ids: list[str] = []

    def poll(self, timeout_s: float = 0.01) -> None:
        for message in self._consumer.consume(500, timeout_s):
            if message.error() is None:
                raw = header(message, EVENT_ID)
                self.event_ids.append(raw.decode() if raw is not None else "")

    def wait_for(self, event_id: str, timeout_s: float) -> bool:
        """Poll until a dead letter of ``event_id`` is visible; return at once when it is."""
        deadline = time.monotonic() + timeout_s
        while event_id not in self.event_ids:
            if time.monotonic() > deadline:
                return False
            self.poll()
        return True

    def close(self) -> None:
        self._consumer.close()


def group_lag(settings: Settings) -> int | None:
    """Records of the main topic and the retry tiers past the group's committed offsets
    (None when Kafka cannot be asked right now, e.g. while the broker restarts)."""
    topics = [settings.retry.main_topic, *settings.retry.retry_topics]
    try:
        with GroupOffsets(settings, timeout_s=5) as group:
            counts = group.partition_counts()
            tps = [TopicPartition(topic, p) for topic in topics for p in range(counts[topic])]
            _, committed = group.members_and_committed(tps)
            beginning = group.offsets(tps, "earliest")
            end = group.offsets(tps, "latest")
    except GroupQueryError:
        return None
    return sum(end[key] - (beginning[key] if offset is None else offset)
               for key, offset in committed.items())


def group_members(settings: Settings) -> int:
    try:
        with GroupOffsets(settings, timeout_s=5) as group:
            return group.members_and_committed([])[0]
    except GroupQueryError:
        return 0


def stop(process: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    """SIGTERM ``process`` and wait for its exit code."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout_s)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"(no {path.name})"


def event_id_of(message: Message) -> str:
    return (header(message, EVENT_ID) or b"").decode()


def parked_move(message: Message) -> bool:
    return header(message, PARKED_BEHIND) is not None


def answered_2xx(requests: Sequence[SimulatedRequest], event_id: str) -> int:
    return sum(1 for r in requests if r.idempotency_key == event_id and 200 <= r.status < 300)


# -- 1. the dead-letter window -------------------------------------------------------------

TRIALS = 3


@dataclass(frozen=True, slots=True)
class Trial:
    dead_letters: int
    deliveries: int  # 2xx answers to the event, duplicates included
    calls: int

    @property
    def fates(self) -> int:
        return self.dead_letters + self.deliveries


def _dead_letter_kill_trial(bootstrap: str, work: Path, main: str, *, recovers: bool) -> Trial:
    """One trial: kill at the dead letter, restart against a downstream that recovers or not."""
    work.mkdir()
    event = new_event()
    event_id = str(event["event_id"])
    failing_plan = FailurePlan(always_fail_keys=frozenset({event_id}))
    with DownstreamSimulator(failing_plan) as failing:
        config = write_config(work, bootstrap=bootstrap, main=main, url=failing.events_url,
                              delays=("1s",), partitions=1, in_process_attempts=1)
        settings = settings_for(config)
        ensure_topics(settings)
        tail = DeadLetterTail(bootstrap, dlq_topic_name(main))
        try:
            produce(bootstrap, main, [event])
            first = start_run_process(config, work, "first")
            try:
                seen = tail.wait_for(event_id, 60)
            finally:
                kill(first)  # the moment the dead letter is visible
        finally:
            tail.close()
        assert seen, log_tail(work / "first.log")
        port = int(failing.base_url.rsplit(":", 1)[1])
        before = failing.requests()

    after_plan = FailurePlan() if recovers else failing_plan
    with DownstreamSimulator(after_plan, port=port) as downstream:
        second = start_run_process(config, work, "second")
        try:
            settled = wait_until(lambda: group_lag(settings) == 0, 60, interval_s=0.2)
        finally:
            exit_code = stop(second)
        assert settled, log_tail(work / "second.log")
        assert exit_code == 0, log_tail(work / "second.log")
        calls = before + downstream.requests()
    dead = [m for m in read_committed(bootstrap, [dlq_topic_name(main)])
            if header(m, EVENT_ID) == event_id.encode()]
    return Trial(dead_letters=len(dead), deliveries=answered_2xx(calls, event_id),
                 calls=sum(1 for r in calls if r.idempotency_key == event_id))


@pytest.mark.parametrize("downstream_after", ["recovers", "keeps_failing"])
def test_a_kill_the_moment_a_dead_letter_is_visible_gives_no_second_fate(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, downstream_after: str
) -> None:
    """One instance (delays ["1s"], one quick attempt), one event answered 503 every time,
    SIGKILL the moment its dead letter is visible to a read_committed reader, then a restart
    with the downstream answering 2xx (or still 503): in every trial the event ends with
    exactly one fate, its one dead letter."""
    recovers = downstream_after == "recovers"
    trials = [_dead_letter_kill_trial(kafka_bootstrap, tmp_path / f"trial{n}",
                                      f"{topic_prefix}.{n}", recovers=recovers)
              for n in range(TRIALS)]
    print(f"\n{downstream_after}: " + "; ".join(
        f"trial {n}: {t.dead_letters} dead letter(s), {t.deliveries} 2xx, {t.calls} calls"
        for n, t in enumerate(trials)))
    dual = [n for n, t in enumerate(trials) if t.dead_letters and t.deliveries]
    twice = [n for n, t in enumerate(trials) if t.dead_letters > 1]
    assert (dual, twice) == ([], []), (
        f"{len(dual)} of {TRIALS} trials delivered and dead-lettered, {len(twice)} of "
        f"{TRIALS} dead-lettered twice: {trials}")
    assert all(t.fates == 1 for t in trials), trials


# -- 2. the lane window --------------------------------------------------------------------

SLOW_CALL_S = 4.0
KILL_AFTER_S = 1.5


def test_an_event_delivered_before_a_slow_call_in_its_lane_gets_one_2xx_across_a_kill(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Two events of one key: A answered 2xx at once, B only after 4 s; SIGKILL 1.5 s after
    A's answer, then a restart: A was recorded as its call finished, so the downstream
    answers A 2xx exactly once."""
    key = f"appt-{uuid.uuid4().hex[:8]}"
    first_event = new_event("appointment.scheduled", appointment_id=key)
    slow_event = new_event("appointment.rescheduled", appointment_id=key)
    first_id, slow_id = str(first_event["event_id"]), str(slow_event["event_id"])

    def slow_first_answer(request: SimulatedRequest) -> None:
        if request.idempotency_key == slow_id and request.attempt == 1:
            time.sleep(SLOW_CALL_S)  # the EHR takes 4 s to answer B, the first time

    with DownstreamSimulator(on_request=slow_first_answer) as downstream:
        config = write_config(tmp_path, bootstrap=kafka_bootstrap, main=topic_prefix,
                              url=downstream.events_url, partitions=1)
        _set_line(config, "timeout = ", 'timeout = "10s"')  # the default: B's call is not cut
        settings = settings_for(config)
        ensure_topics(settings)
        produce(kafka_bootstrap, topic_prefix, [first_event, slow_event])

        first = start_run_process(config, tmp_path, "first")
        try:
            assert downstream.wait_for(lambda: answered_2xx(downstream.requests(), first_id) > 0
                                       and downstream.attempts_for(slow_id) > 0, 60), \
                log_tail(tmp_path / "first.log")
            answered_at = next(r.monotonic_s for r in downstream.requests()
                               if r.idempotency_key == first_id)
            time.sleep(max(0.0, answered_at + KILL_AFTER_S - time.monotonic()))
            assert downstream.attempts_for(slow_id) == 1, "B's slow call must be in flight"
        finally:
            kill(first)
        second = start_run_process(config, tmp_path, "second")
        try:
            settled = wait_until(lambda: group_lag(settings) == 0, 60, interval_s=0.2)
        finally:
            exit_code = stop(second)
        assert (settled, exit_code) == (True, 0), log_tail(tmp_path / "second.log")
        requests = downstream.requests()
    print(f"\nA answered 2xx {answered_2xx(requests, first_id)} time(s); "
          f"B called {sum(1 for r in requests if r.idempotency_key == slow_id)} time(s)")
    assert answered_2xx(requests, first_id) == 1
    assert slow_id in downstream.delivered_keys()


# -- 3. a bounded chaos run ----------------------------------------------------------------

SEED = 1717
INSTANCES = 3
EVENTS = 3000
PARTITIONS = 6
DELAYS = ("1s", "2s")
STREAM_S = 20.0  # the events are published evenly over this long
KILLS = 5
KILL_WINDOW_S = (2.0, 24.0)
BROKER_RESTART_WINDOW_S = (8.0, 14.0)
SETTLE_S = 90.0
CHAOS_REDIS_DB = 7


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker for this test alone, so restarting it disturbs no other test."""
    broker = LocalKafka(tmp_path / "own-kafka")
    broker.start(port=0)
    try:
        yield broker
    finally:
        broker.stop()


def own_redis_db(redis_url: str) -> str:
    """A Redis database of this test alone, emptied: the seeded event ids and keys of an
    earlier run in this session must not look recorded or parked."""
    url = redis_url.rsplit("/", 1)[0] + f"/{CHAOS_REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def restart_broker(broker: LocalKafka, bootstrap: str) -> float:
    """Stop the broker cleanly and start it again on the same port; return the outage (s)."""
    started = time.monotonic()
    broker.stop()
    assert broker.start(port=int(bootstrap.rsplit(":", 1)[1])) == bootstrap
    return time.monotonic() - started


def chaos_events() -> list[dict[str, Any]]:
    """EVENTS events with seeded ids (so the downstream fails the same ones every run),
    two per appointment."""
    events = []
    for n in range(EVENTS):
        event = sample_event("appointment.scheduled", event_id=f"evt-chaos-{SEED}-{n:05d}")
        event["payload"]["appointment_id"] = f"appt-chaos-{n % (EVENTS // 2):05d}"
        events.append(event)
    return events


class EventStream(threading.Thread):
    """Publishes ``events`` evenly over ``duration_s``, riding out a broker restart."""

    def __init__(self, bootstrap: str, topic: str, events: Sequence[dict[str, Any]],
                 duration_s: float) -> None:
        super().__init__(name="event-stream", daemon=True)
        self._servers, self._topic, self._events = bootstrap, topic, events
        self._duration_s = duration_s
        self.failures: list[str] = []
        self.unacked = -1

    def run(self) -> None:
        codec = EventCodec()
        producer = Producer({"bootstrap.servers": self._servers, "enable.idempotence": True,
                             "message.timeout.ms": 120_000, "linger.ms": 5,
                             "logger": logging.getLogger("chaos.stream")})  # outage lines

        def acked(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self.failures.append(str(error))

        started = time.monotonic()
        batch = 50
        for start in range(0, len(self._events), batch):
            due = started + self._duration_s * start / len(self._events)
            time.sleep(max(0.0, due - time.monotonic()))  # pacing, not correctness
            for event in self._events[start:start + batch]:
                producer.produce(self._topic, key=entity_key(event), value=codec.encode(event),
                                 on_delivery=acked)
            producer.poll(0)
        self.unacked = producer.flush(150)


class Fleet:
    """``INSTANCES`` ``run`` processes of one config; a killed one is started again."""

    def __init__(self, config: Path, work: Path) -> None:
        self._config, self._work = config, work
        self._started = 0
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []  # of the process now in each slot
        for slot in range(INSTANCES):
            process, log = self._start(slot)
            self.processes.append(process)
            self.logs.append(log)

    def _start(self, slot: int) -> tuple[subprocess.Popen[bytes], Path]:
        name = f"run{slot}-{self._started}"
        self._started += 1
        return start_run_process(self._config, self._work, name), self._work / f"{name}.log"

    def kill_and_restart(self, slot: int) -> None:
        kill(self.processes[slot])
        self.processes[slot], self.logs[slot] = self._start(slot)

    def stop(self) -> list[int]:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        return [process.wait(60) for process in self.processes]

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                kill(process)

    def tails(self) -> str:
        return "\n".join(f"== {log.name}\n{log_tail(log, 1500)}" for log in self.logs)

    def stacks(self) -> str:
        """Where each live instance's poll thread is, for a run that stopped making progress:
        SIGABRT makes faulthandler (``PYTHONFAULTHANDLER``) write every thread's stack to
        the log before the process dies."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGABRT)
                process.wait(10)
        return "\n".join(
            f"== {log.name}\n" + log_tail(log, 100_000).rpartition("Current thread")[2][:2000]
            for log in self.logs)


def test_a_chaos_run_keeps_every_event_to_one_fate_and_its_attempt_budget(
    own_broker: LocalKafka, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three instances sharing a Redis dedup store, a downstream answering ~20% 503 and
    rejecting ~3% of events for good, events (two per appointment, so some are parked)
    streaming in while instances are SIGKILLed (and restarted) at seeded random moments and
    the broker restarts once: no event is lost, none is both delivered and dead-lettered,
    none has two dead letters or more than 1 + len(delays) topic attempts, and the group
    ends with lag 0."""
    bootstrap = own_broker.status().bootstrap
    assert bootstrap is not None
    chaos_redis = own_redis_db(redis_url)
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # inherited by `run`: see Fleet.stacks
    rng = random.Random(SEED)
    main = f"chaos.{uuid.uuid4().hex[:8]}"
    plan = FailurePlan(transient_rate=0.2, permanent_rate=0.03, seed=SEED,
                       transient_kinds=(TransientKind.UNAVAILABLE,))
    events = chaos_events()
    ids = {str(e["event_id"]) for e in events}
    kills = sorted((rng.uniform(*KILL_WINDOW_S), rng.randrange(INSTANCES)) for _ in range(KILLS))
    broker_restart_at = rng.uniform(*BROKER_RESTART_WINDOW_S)
    actions: list[tuple[float, str, int]] = sorted(
        [(at, "kill", slot) for at, slot in kills] + [(broker_restart_at, "broker", -1)])

    with DownstreamSimulator(plan) as downstream:
        config = write_config(tmp_path, bootstrap=bootstrap, main=main,
                              url=downstream.events_url, delays=DELAYS, partitions=PARTITIONS,
                              in_process_attempts=1, concurrency=8)
        _set_line(config, "store = ", f'store = "{chaos_redis}"')
        settings = settings_for(config)
        ensure_topics(settings)
        dlq = dlq_topic_name(main)
        fleet = Fleet(config, tmp_path)
        try:
            assert wait_until(lambda: group_members(settings) == INSTANCES, 60, 0.5), \
                fleet.tails()
            stream = EventStream(bootstrap, main, events, STREAM_S)
            started = time.monotonic()
            stream.start()
            outage_s = 0.0
            for at, kind, slot in actions:
                time.sleep(max(0.0, started + at - time.monotonic()))  # the chaos schedule
                if kind == "kill":
                    fleet.kill_and_restart(slot)
                else:
                    outage_s = restart_broker(own_broker, bootstrap)
            stream.join(180)
            assert (stream.unacked, stream.failures) == (0, []), stream.failures[:3]

            tail = DeadLetterTail(bootstrap, dlq)
            try:
                def settled() -> bool:
                    tail.poll(0.1)
                    if not ids <= set(downstream.delivered_keys()) | set(tail.event_ids):
                        return False
                    return group_lag(settings) == 0

                assert wait_until(settled, SETTLE_S, 0.5), (
                    f"{len(ids - set(downstream.delivered_keys()) - set(tail.event_ids))} "
                    f"events without a fate, lag {group_lag(settings)}\n{fleet.tails()}\n"
                    f"stacks of the poll threads:\n{fleet.stacks()}")
            finally:
                tail.close()
            exit_codes = fleet.stop()
        finally:
            fleet.kill_all()
        final_lag = group_lag(settings)
        delivered = set(downstream.delivered_keys())
        stats = downstream.stats()

    codec = EventCodec()
    main_ids = [str(codec.decode(m.value())["event_id"])
                for m in read_committed(bootstrap, [main], 60)]
    tier_records = read_committed(bootstrap, settings.retry.retry_topics, 60)
    dead_records = read_committed(bootstrap, [dlq], 60)
    dead_letters = Counter(event_id_of(m) for m in dead_records)
    # A parked move (clinic.parked-behind) takes a record on without calling the handler for
    # it, so the record it came from was no attempt: every other main or tier record was.
    parked = Counter(event_id_of(m) for m in tier_records + dead_records if parked_move(m))
    attempts = Counter(main_ids) + Counter(event_id_of(m) for m in tier_records) - parked
    hops = Counter((m.topic(), event_id_of(m)) for m in tier_records if not parked_move(m))
    hops_twice = sum(n - 1 for n in hops.values())

    lost = ids - delivered - set(dead_letters)
    dual = delivered & set(dead_letters)
    two_dead = {event_id for event_id, n in dead_letters.items() if n > 1}
    over_budget = {event_id: n for event_id, n in attempts.items() if n > 1 + len(DELAYS)}
    print(f"\nchaos run (seed {SEED}): {len(events)} events, {len(kills)} SIGKILLs, 1 broker "
          f"restart ({outage_s:.1f} s down), {len(dead_records)} dead letters "
          f"({len(dead_letters)} events), {len(tier_records)} retried records "
          f"({parked.total()} parked moves), {hops_twice} failure hop(s) made twice, "
          f"{stats['requests']} downstream calls, "
          f"{stats['duplicates']} repeated 2xx; lost {len(lost)}, dual fates {len(dual)}, "
          f"events with 2+ dead letters {len(two_dead)}, over the attempt budget "
          f"{len(over_budget)}, lag at the end {final_lag}, exit codes {exit_codes}")
    assert sorted(main_ids) == sorted(ids), "every event is published once"
    assert lost == set(), f"{len(lost)} lost: {sorted(lost)[:5]}"
    assert dual == set(), f"{len(dual)} delivered and dead-lettered: {sorted(dual)[:5]}"
    assert two_dead == set(), f"{len(two_dead)} dead-lettered twice: {sorted(two_dead)[:5]}"
    assert over_budget == {}, f"{len(over_budget)} over 1 + len(delays) topic attempts: " + \
        "; ".join(f"{event_id}: main + " + str([
                      (m.topic(), "parked" if parked_move(m) else "hop")
                      for m in tier_records if event_id_of(m) == event_id])
                  for event_id in sorted(over_budget)[:5])
    assert final_lag == 0
    assert exit_codes == [0] * INSTANCES
