"""The run loop on the in-memory broker with a manual clock: timing and rebalances, exactly.

Each test runs the real ``Runner`` and ``RecordProcessor`` (one lane, on the poll thread)
against ``MemoryBroker``; waiting costs simulated time only, so a 30 s retry tier takes
milliseconds and the due time can be checked to the millisecond.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from consumer.dedup.rules import Outcome
from consumer.dedup.store import MemoryDedupStore
from consumer.delivery.handlers import DeliveryContext
from consumer.errors import DedupStoreError, PermanentError, TransientError
from consumer.events.codec import EventCodec, EventRecord
from consumer.observability.telemetry import Telemetry
from consumer.pipeline.lanes import LaneFailure
from consumer.pipeline.memory_broker import (
    MemoryBroker,
    MemoryConsumer,
    MemoryProducer,
    MemoryTransactions,
    StoredRecord,
)
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.records import Delivered, Fate, InboundRecord
from consumer.pipeline.runner import FatalError, Runner
from retry_topics.clock import ManualClock
from retry_topics.headers import decode_headers
from retry_topics.policy import InProcessRetry, RetryPolicy
from tests.unit.pipeline.inline_runner import inline_runner, run_until
from tests.unit.sample_events import sample_event

MAIN = "clinic.events"
TIER_5S, TIER_30S, DLQ = f"{MAIN}.retry.5s", f"{MAIN}.retry.30s", f"{MAIN}.dlq"
CODEC = EventCodec()


@dataclass
class ScriptedHandler:
    """Fails an event's first ``failures[event_id]`` calls; records when each call happened."""

    clock: ManualClock
    failures: dict[str, int] = field(default_factory=dict)
    permanent: set[str] = field(default_factory=set)
    calls: list[tuple[str, int, str]] = field(default_factory=list)  # (event_id, now_ms, topic)

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        self.calls.append((context.event_id, self.clock.now_ms(), context.topic))
        if context.event_id in self.permanent:
            raise PermanentError("rejected", error_class="http.422")
        earlier = sum(1 for call in self.calls if call[0] == context.event_id) - 1
        if earlier < self.failures.get(context.event_id, 0):
            raise TransientError("unavailable", error_class="http.503")

    def close(self) -> None:
        """Nothing to release."""

    def times(self, event_id: str) -> list[int]:
        return [at for eid, at, _ in self.calls if eid == event_id]


@dataclass
class Loop:
    broker: MemoryBroker
    consumer: MemoryConsumer
    runner: Runner
    handler: ScriptedHandler
    clock: ManualClock
    transactions: MemoryTransactions | None = None

    def publish(self, event_id: str, *, key: bytes = b"appt-1", partition: int = 0) -> int:
        event: dict[str, Any] = sample_event("appointment.scheduled", event_id)
        return self.broker.append(MAIN, StoredRecord(key, CODEC.encode(event), (),
                                                     self.clock.now_ms()), partition)

    def run_until(self, done: Callable[[], bool]) -> None:
        """Run the loop on this thread; it is stopped at the first poll where ``done`` holds."""
        run_until(self.runner, self.consumer, done)


def build_loop(*, main_partitions: int = 1, refuse: tuple[str, ...] = (),
               max_in_flight: int = 5000, broker: MemoryBroker | None = None,
               store: MemoryDedupStore | None = None, handler: ScriptedHandler | None = None,
               transactions: Callable[[MemoryBroker, MemoryConsumer], MemoryTransactions]
               | None = None) -> Loop:
    """A runner over ``broker`` (a fresh one with the topics, on a manual clock, if None);
    ``store``, ``handler`` and hops committed in ``transactions`` where given, so several
    runners can share a broker and a store (a restart, a second instance)."""
    if broker is None:
        broker = MemoryBroker(ManualClock(), max_idle_ms=3_600_000)
        broker.create_topic(MAIN, main_partitions)
        for topic in (TIER_5S, TIER_30S, DLQ):
            broker.create_topic(topic)
    clock = broker.clock
    assert isinstance(clock, ManualClock)
    policy = RetryPolicy(main_topic=MAIN, delays_ms=(5_000, 30_000),
                         in_process=InProcessRetry(attempts=1))
    handler = handler or ScriptedHandler(clock)
    consumer = MemoryConsumer(broker)
    outcomes = PendingOutcomes(store or MemoryDedupStore(clock))
    committing = transactions(broker, consumer) if transactions is not None else None
    runner = inline_runner(consumer, MemoryProducer(broker, refuse=refuse), policy=policy,
                           handler=handler, outcomes=outcomes, clock=clock,
                           drain_timeout_s=1.0, max_in_flight=max_in_flight,
                           transactions=committing)
    return Loop(broker, consumer, runner, handler, clock, committing)


def test_a_retry_runs_exactly_when_due_never_before() -> None:
    """The tier record's partition is paused until its head is due, then resumed: the retry
    happens at the failure time + 5 s, to the poll's granularity, never earlier."""
    loop = build_loop()
    loop.handler.failures["evt-a"] = 1
    loop.publish("evt-a")
    loop.run_until(lambda: len(loop.handler.times("evt-a")) == 2)
    first, retry = loop.handler.times("evt-a")
    assert 5_000 <= retry - first <= 5_000 + 250  # IDLE_POLL_S is the coarsest wait
    assert loop.runner.stats["delivered"] == 1


def test_a_waiting_retry_does_not_hold_up_later_events_of_other_partitions() -> None:
    """While the failed event waits in its tier, events published after it are delivered
    at once: the wait pauses one tier partition, not the loop."""
    loop = build_loop(main_partitions=2)
    loop.handler.failures["evt-slow"] = 1
    loop.publish("evt-slow", partition=0)
    for n in range(5):
        loop.publish(f"evt-{n}", key=f"appt-{n}".encode(), partition=1)
    loop.run_until(lambda: len(loop.handler.calls) == 7)
    failed_at = loop.handler.times("evt-slow")[0]
    others = [at for eid, at, _ in loop.handler.calls if eid.startswith("evt-") and
              eid != "evt-slow"]
    assert max(others) < failed_at + 5_000
    assert loop.handler.times("evt-slow")[1] >= failed_at + 5_000


def test_each_tier_keeps_its_delay_and_a_last_failure_is_dead_lettered_once() -> None:
    """Attempts at 0, +5 s and +30 s; the third failure goes to the DLQ with attempts 3."""
    loop = build_loop()
    loop.handler.failures["evt-b"] = 99
    loop.publish("evt-b")
    loop.run_until(lambda: loop.runner.stats["dead_lettered"] == 1)
    first, second, third = loop.handler.times("evt-b")
    assert second - first >= 5_000
    assert third - second >= 30_000
    (dead,) = loop.broker.records(DLQ)
    assert decode_headers(dead[2].headers).attempts == 3


def test_offsets_are_committed_only_after_a_republish_is_acknowledged() -> None:
    """A republish the broker refuses stops the loop with the source offset uncommitted, so
    the event is redelivered after a restart rather than lost."""
    loop = build_loop(refuse=(TIER_5S,))
    loop.handler.failures["evt-c"] = 1
    loop.publish("evt-c")
    with pytest.raises(Exception, match="refused"):
        loop.run_until(lambda: False)
    assert loop.broker.committed((MAIN, 0)) in (None, 0)


def test_a_partition_revoked_while_its_head_waits_is_resumed_when_it_comes_back() -> None:
    """The broker keeps a pause across a revoke and a re-assignment to the same consumer;
    the loop resumes the partition on assignment, so the waiting retry still runs."""
    loop = build_loop()
    loop.handler.failures["evt-d"] = 1
    loop.publish("evt-d")
    tier = (TIER_5S, 0)
    rebalanced = False

    def done() -> bool:
        nonlocal rebalanced
        if not rebalanced and tier in loop.consumer.paused:
            loop.consumer.rebalance(revoke=[tier], assign=[tier])
            rebalanced = True
        return len(loop.handler.times("evt-d")) == 2

    loop.run_until(done)
    assert rebalanced
    first, retry = loop.handler.times("evt-d")
    assert retry - first >= 5_000


def test_a_lost_partition_is_forgotten_and_its_offsets_are_not_stored() -> None:
    """After ``on_lost`` the loop stores nothing for the partition: its new owner decides."""
    loop = build_loop()
    loop.publish("evt-e")
    lost = False

    def done() -> bool:
        nonlocal lost
        if loop.handler.calls and not lost:
            loop.consumer.rebalance(lose=[(MAIN, 0)])
            lost = True
            return False
        return lost and (MAIN, 0) not in loop.runner.assignment

    loop.run_until(done)
    assert loop.broker.committed((MAIN, 0)) is None


def test_offsets_step_over_transaction_markers_at_the_end_of_a_partition() -> None:
    """A marker takes an offset nobody receives; once the partition is idle the stored
    offset moves past it, so lag reads 0 instead of 1 forever."""
    loop = build_loop()
    loop.publish("evt-f")
    marker = loop.broker.append_marker(MAIN, 0)
    loop.run_until(lambda: loop.consumer.stored.get((MAIN, 0)) == marker + 1)
    assert loop.runner.stats["delivered"] == 1
    assert loop.broker.committed((MAIN, 0)) == marker + 1


def test_a_permanent_failure_goes_straight_to_the_dlq_keeping_the_original_bytes() -> None:
    loop = build_loop()
    loop.handler.permanent.add("evt-g")
    offset = loop.publish("evt-g")
    loop.run_until(lambda: bool(loop.broker.records(DLQ)))
    (dead,) = loop.broker.records(DLQ)
    original = loop.broker.slot((MAIN, 0), offset)
    assert original is not None
    assert dead[2].value == original.value
    assert len(loop.handler.calls) == 1


def test_at_info_a_healthy_stream_logs_summaries_not_a_line_per_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Twenty events delivered at once, five more 15 s later: one summary line at the 10 s
    interval, one at shutdown for the rest, and no per-event line."""
    loop = build_loop()
    caplog.set_level(logging.INFO, logger="clinic_events")
    for n in range(20):
        loop.publish(f"evt-{n}", key=f"appt-{n}".encode())
    late = False

    def done() -> bool:
        nonlocal late
        if not late and loop.clock.monotonic() >= 15:
            for n in range(20, 25):
                loop.publish(f"evt-{n}", key=f"appt-{n}".encode())
            late = True
        return loop.runner.stats["delivered"] == 25

    loop.run_until(done)
    outcome_lines = [r for r in caplog.records if r.name == "clinic_events.outcome"]
    assert [(r.getMessage(), vars(r)["delivered"]) for r in outcome_lines] == [
        ("outcomes", 20), ("outcomes", 5)]


def test_the_loop_takes_no_more_records_than_max_in_flight_allows() -> None:
    """Back-pressure: with at most 4 records in flight, no batch asks for more than the
    room left, and the backlog is still worked off completely, in order."""
    loop = build_loop(max_in_flight=4)
    for n in range(20):
        loop.publish(f"evt-{n:02}")
    asked: list[int] = []
    consume = loop.consumer.consume

    def spying(max_records: int, timeout_s: float) -> list[InboundRecord]:
        asked.append(max_records)
        return consume(max_records, timeout_s)

    loop.consumer.consume = spying  # type: ignore[method-assign]
    loop.run_until(lambda: loop.runner.stats["delivered"] == 20)
    assert asked
    assert max(asked) <= 4
    assert [eid for eid, _, _ in loop.handler.calls] == [f"evt-{n:02}" for n in range(20)]


class HeldLanes:
    """Lanes whose records stay in flight until the test finishes them, oldest first.

    Like a slow downstream with a deep backlog, but every step is the test's: ``finish(n)``
    completes the ``n`` oldest records in flight.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_flight: list[InboundRecord] = []
        self.results: queue.SimpleQueue[list[Fate] | LaneFailure] = queue.SimpleQueue()

    def dispatch(self, records: Sequence[InboundRecord]) -> None:
        self._in_flight.extend(records)

    def finish(self, count: int) -> None:
        done, self._in_flight = self._in_flight[:count], self._in_flight[count:]
        if done:
            self.results.put([Delivered(record) for record in done])

    def in_flight_limit(self, ceiling: int) -> int:
        return min(ceiling, self._limit)

    def idle(self) -> bool:
        return not self._in_flight

    def discard_pending(self) -> None:
        self._in_flight.clear()

    def stop(self, timeout_s: float = 30.0, *, discard_pending: bool = True) -> None:
        self._in_flight.clear()


def test_a_backlog_drains_from_every_partition_at_once() -> None:
    """A client that always hands out its lowest partition first (as librdkafka does after
    a pause purged its prefetched records) must not starve the others: each main partition
    gets a share of the in-flight room, so all three make progress together."""
    clock = ManualClock()
    broker = MemoryBroker(clock)
    broker.create_topic(MAIN, 3)
    for partition in range(3):
        for n in range(300):
            broker.append(MAIN, StoredRecord(f"k{n}".encode(), b"v", (), clock.now_ms()),
                          partition)
    lanes = HeldLanes(limit=30)
    consumer = MemoryConsumer(broker, fetch_records=300)  # a chunk outlasts the room
    runner = Runner(consumer=consumer, producer=MemoryProducer(broker),
                    policy=RetryPolicy(main_topic=MAIN, delays_ms=(5_000,)),
                    lanes_factory=lambda _hops: lanes,  # type: ignore[arg-type,return-value]
                    outcomes=PendingOutcomes(MemoryDedupStore(clock)), clock=clock,
                    telemetry=Telemetry(), drain_timeout_s=0.1)
    progress: list[list[int]] = []
    consume = consumer.consume

    def step(max_records: int, timeout_s: float) -> list[InboundRecord]:
        lanes.finish(10)
        progress.append([consumer.stored.get((MAIN, p), 0) for p in range(3)])
        if runner.stats["delivered"] >= 450:  # half the backlog
            runner.stop()
        return consume(max_records, timeout_s)

    consumer.consume = step  # type: ignore[method-assign]
    runner.run()
    halfway = progress[-1]
    assert min(halfway) >= 100, f"offsets stored at half the backlog: {halfway}"


def test_lanes_failing_on_one_cause_log_it_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dedup store that stalls fails every lane that calls it: one traceback per cause
    says what happened, sixteen identical ones bury it. The first failure stops the runner."""
    clock = ManualClock()
    broker = MemoryBroker(clock)
    broker.create_topic(MAIN, 1)
    broker.append(MAIN, StoredRecord(b"k", b"v", (), clock.now_ms()), 0)
    lanes = HeldLanes(limit=10)
    stalled = "Timeout reading from 127.0.0.1:6379"
    for error in (TimeoutError(stalled), TimeoutError(stalled), TimeoutError(stalled),
                  KeyError("lane-bug")):
        lanes.results.put(LaneFailure(error))
    runner = Runner(consumer=MemoryConsumer(broker), producer=MemoryProducer(broker),
                    policy=RetryPolicy(main_topic=MAIN, delays_ms=(5_000,)),
                    lanes_factory=lambda _hops: lanes,  # type: ignore[arg-type,return-value]
                    outcomes=PendingOutcomes(MemoryDedupStore(clock)), clock=clock,
                    telemetry=Telemetry(), drain_timeout_s=0.1)
    with caplog.at_level(logging.DEBUG, logger="clinic_events"), \
            pytest.raises(FatalError, match=stalled):
        runner.run()
    failed = [r for r in caplog.records if r.getMessage() == "a worker lane failed"]
    assert [(r.levelno, str(r.exc_info[1]) if r.exc_info else None) for r in failed] == [
        (logging.ERROR, stalled), (logging.ERROR, "'lane-bug'")]
    again = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("another worker lane failed")]
    assert again == [f"another worker lane failed: TimeoutError: {stalled}"] * 2


class DeadLettersUnrecorded(MemoryDedupStore):
    """A store whose user may not run what records a dead letter (a Redis ACL without EVAL)."""

    def record(self, event_id: str, outcome: Outcome) -> None:
        if outcome == "dead_lettered":
            raise DedupStoreError("dedup store redis://noeval:****@127.0.0.1:6379/0: no "
                                  "permissions to run the 'eval' command")
        super().record(event_id, outcome)


@pytest.mark.parametrize("transactional", [False, True])
def test_a_store_that_cannot_record_a_dead_letter_stops_the_run_naming_the_store(
    transactional: bool, caplog: pytest.LogCaptureFixture,
) -> None:
    """As a store failing a delivered event's outcome does: FatalError with the store's
    message (``run`` prints it on one line), not the DedupStoreError's traceback. The dead
    letter is in the DLQ all the same, so it is counted, logged and told as one."""
    loop = build_loop(store=DeadLettersUnrecorded(ManualClock()),
                      transactions=MemoryTransactions if transactional else None)
    loop.handler.permanent.add("evt-bad")
    loop.publish("evt-bad")
    with caplog.at_level(logging.INFO, logger="clinic_events"), \
            pytest.raises(FatalError, match="no permissions to run the 'eval' command"):
        loop.run_until(lambda: False)
    assert len(loop.broker.records(DLQ)) == 1  # durable all the same
    assert loop.runner.stats["dead_lettered"] == 1
    assert [getattr(r, "event_id", None) for r in caplog.records
            if getattr(r, "outcome", None) == "dead_lettered"] == ["evt-bad"]
