"""Order per entity across retry hops, on the in-memory broker with a manual clock.

The real ``Runner`` and ``RecordProcessor`` (one lane, on the poll thread) with an
``EntityOrder`` over the memory dedup store: events of one key reach the handler in
published order although the first waits in a retry tier; other keys do not wait; parked
state is shared through the store, so a second runner (a restart) carries on; ``hold`` and
``release`` after a dead-lettered head; ``mode = "none"`` is today's behaviour.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from consumer.dedup.chains import ParkedSummary
from consumer.dedup.sqlite import SqliteDedupStore
from consumer.dedup.store import DedupStore, MemoryDedupStore
from consumer.delivery.handlers import DeliveryContext
from consumer.errors import PermanentError, TransientError
from consumer.events.codec import EventCodec, EventRecord
from consumer.observability.telemetry import Telemetry
from consumer.ops.dlq.chains import release_discarded
from consumer.ops.dlq.model import DlqRecord, parse_dlq_record
from consumer.pipeline.breaker import OutageBreaker
from consumer.pipeline.memory_broker import (
    MemoryBroker,
    MemoryConsumer,
    MemoryProducer,
    MemoryTransactions,
    StoredRecord,
)
from consumer.pipeline.ordering import EntityOrder
from consumer.pipeline.outbox import HopOutbox
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.processing import RecordProcessor
from consumer.pipeline.records import InboundRecord, Republished
from consumer.pipeline.runner import FatalError, Runner
from retry_topics.classification import ExceptionRules
from retry_topics.clock import ManualClock
from retry_topics.headers import RecordHeaders, decode_headers, encode_headers
from retry_topics.hops import replay_headers
from retry_topics.limits import BreakerPolicy
from retry_topics.ordering import Link, OrderingPolicy, Position
from retry_topics.policy import InProcessRetry, RetryPolicy
from tests.unit.pipeline.inline_runner import inline_runner, run_until
from tests.unit.sample_events import sample_event

MAIN = "clinic.events"
TIER_5S, TIER_30S, DLQ = f"{MAIN}.retry.5s", f"{MAIN}.retry.30s", f"{MAIN}.dlq"
CODEC = EventCodec()
PER_KEY = OrderingPolicy()


@dataclass
class Downstream:
    """Fails an event's first ``failures[event_id]`` calls (or always, if ``permanent``);
    notes every call and the order of deliveries."""

    clock: ManualClock
    failures: dict[str, int] = field(default_factory=dict)
    permanent: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    delivered_at: dict[str, int] = field(default_factory=dict)
    down_until_ms: int = 0  # an outage: 503 for everyone until then

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        self.calls.append(context.event_id)
        if self.clock.now_ms() < self.down_until_ms:
            raise TransientError("unavailable", error_class="http.503")
        if context.event_id in self.permanent:
            raise PermanentError("rejected", error_class="http.422")
        if self.calls.count(context.event_id) <= self.failures.get(context.event_id, 0):
            raise TransientError("unavailable", error_class="http.503")
        self.delivered.append(context.event_id)
        self.delivered_at.setdefault(context.event_id, self.clock.now_ms())

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class World:
    """A broker, a dedup store and a downstream that outlive any one runner (restarts)."""

    clock: ManualClock = field(default_factory=ManualClock)
    main_partitions: int = 1
    broker: MemoryBroker = field(init=False)
    store: DedupStore = field(init=False)
    downstream: Downstream = field(init=False)
    consumer: MemoryConsumer | None = field(init=False, default=None)  # the running one's
    runner: Runner | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.broker = MemoryBroker(self.clock, max_idle_ms=3_600_000)
        self.broker.create_topic(MAIN, self.main_partitions)
        for topic in (TIER_5S, TIER_30S, DLQ):
            self.broker.create_topic(topic)
        self.store = MemoryDedupStore(self.clock)
        self.downstream = Downstream(self.clock)

    def publish(self, event_id: str, key: bytes = b"appt-1",
                headers: tuple[tuple[str, bytes | None], ...] = (), partition: int = 0) -> None:
        event: dict[str, Any] = sample_event("appointment.scheduled", event_id)
        self.broker.append(MAIN, StoredRecord(key, CODEC.encode(event), headers,
                                              self.clock.now_ms()), partition)

    def headers(self, topic: str) -> list[RecordHeaders]:
        return [decode_headers(record.headers) for _, _, record in self.broker.records(topic)]

    def dead_letters(self) -> list[DlqRecord]:
        """The DLQ as ``dlq`` commands read it."""
        return [parse_dlq_record(partition=partition, offset=offset,
                                 timestamp_ms=record.timestamp_ms, key=record.key,
                                 value=record.value, headers=record.headers, codec=CODEC)
                for partition, offset, record in self.broker.records(DLQ)]

    def replay(self, record: DlqRecord) -> None:
        """What ``dlq replay`` publishes for ``record``."""
        self.publish(record.event_id or "",
                     headers=tuple(encode_headers(replay_headers(record.headers))))

    def chain(self, key: str = "appt-1") -> list[tuple[str, str]]:
        return [(link.event_id, link.state)
                for link in self.store.chains([key]).get(key, [])]

    def run_until(self, done: Callable[[], bool], *,
                  ordering: OrderingPolicy | None = PER_KEY,
                  breaker: OutageBreaker | None = None,
                  aborted_commits: int | None = None,
                  prepare: Callable[[Runner], None] | None = None) -> Runner:
        """A fresh runner over this world, run until ``done`` (``ordering`` None: "none").

        ``aborted_commits``: hops are transactional, and that many commits abort first (a
        kill before the commit leaves what a run whose commits all abort leaves)."""
        policy = RetryPolicy(main_topic=MAIN, delays_ms=(5_000, 30_000),
                             in_process=InProcessRetry(attempts=1))
        consumer = MemoryConsumer(self.broker)
        outcomes = PendingOutcomes(self.store)
        order = None if ordering is None else \
            EntityOrder(self.store, ordering, outcomes, self.clock, policy.dlq_topic)
        transactions = None
        if aborted_commits is not None:
            transactions = MemoryTransactions(self.broker, consumer)
            transactions.abort_next(aborted_commits)
        runner = inline_runner(consumer, MemoryProducer(self.broker), policy=policy,
                               handler=self.downstream, outcomes=outcomes, clock=self.clock,
                               ordering=order, breaker=breaker, drain_timeout_s=1.0,
                               transactions=transactions)
        self.consumer, self.runner = consumer, runner
        if prepare is not None:
            prepare(runner)
        run_until(runner, consumer, done)
        return runner


def test_later_events_of_a_key_wait_behind_one_in_a_retry_tier() -> None:
    """scheduled fails once; rescheduled and cancelled are parked behind it, without a call,
    and reach the downstream after it, in published order."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    for event_id in ("scheduled", "rescheduled", "cancelled"):
        world.publish(event_id)
    runner = world.run_until(lambda: len(world.downstream.delivered) == 3)
    assert world.downstream.delivered == ["scheduled", "rescheduled", "cancelled"]
    assert world.downstream.calls == ["scheduled", "scheduled", "rescheduled", "cancelled"]
    parked = [h for h in world.headers(TIER_5S) if h.parked_behind is not None]
    assert [(h.event_id, h.parked_behind, h.attempts) for h in parked] == [
        ("rescheduled", "scheduled", 0), ("cancelled", "scheduled", 0)]
    assert runner.stats["parked"] == 2
    assert world.store.parked_summary() == ParkedSummary(0, None)  # every link has left


def test_an_earlier_event_seen_again_is_not_parked_behind_a_later_one() -> None:
    """E1 is delivered; E2 fails and joins the chain; the instance is killed before E1's
    outcome is recorded and before any commit. The next instance sees E1 again, with no
    outcome: E1 was published before the head E2, so it proceeds (delivered again, which
    Idempotency-Key makes harmless), then E2: the downstream's last word is E2's, as
    published. (Before, E1 was parked behind E2 and reached the downstream after it.)"""
    world = World()
    world.downstream.failures["e2"] = 1
    world.publish("e1")
    world.publish("e2")
    world.run_until(lambda: world.downstream.calls == ["e1", "e2"], aborted_commits=10_000)
    assert world.chain() == [("e2", "waiting")]
    assert world.broker.records(TIER_5S) == []  # the kill: nothing committed
    world.store.forget("e1")  # nor E1's outcome: the kill came before its write

    world.run_until(lambda: world.downstream.delivered[-1:] == ["e2"], aborted_commits=0)
    assert world.downstream.delivered == ["e1", "e1", "e2"]
    assert world.downstream.calls == ["e1", "e2", "e1", "e2"]
    assert not world.broker.records(DLQ)
    assert world.store.parked_summary().keys == 0


def test_a_chain_another_instance_made_before_a_consume_parks_the_record(
        tmp_path: Path) -> None:
    """Two instances share one SQLite file. The other one sent ``scheduled`` of appt-1 to a
    tier and linked it; ``cancelled`` of appt-1, consumed after that, waits behind it,
    although this instance's store never held the chain before."""
    world = World()
    path = tmp_path / "dedup.sqlite3"
    world.store = SqliteDedupStore(path, 86_400_000, world.clock)
    theirs = SqliteDedupStore(path, 86_400_000, world.clock)
    theirs.join("appt-1", Link(event_id="scheduled", topic=TIER_5S,
                               parked_at_ms=world.clock.now_ms()))
    world.publish("cancelled")
    try:
        world.run_until(lambda: len(world.headers(TIER_5S)) == 1)
    finally:
        world.store.close()
        theirs.close()
    assert world.downstream.calls == []
    assert [h.parked_behind for h in world.headers(TIER_5S)] == ["scheduled"]


class UnreadableChains(MemoryDedupStore):
    """A store whose chains cannot be read (a disk error on the SQLite file, say)."""

    def refresh_chains(self) -> None:
        raise OSError("disk I/O error")


def test_parked_keys_that_cannot_be_read_stop_the_loop_before_any_call() -> None:
    """The consumed record is neither processed nor tracked, so its offset is never
    committed: the next start consumes it again."""
    world = World()
    world.store = UnreadableChains(world.clock)
    world.publish("scheduled")
    with pytest.raises(FatalError, match="disk I/O error"):
        world.run_until(lambda: False)
    assert world.downstream.calls == []
    assert world.broker.committed((MAIN, 0)) is None


def test_a_parked_key_does_not_hold_up_other_keys() -> None:
    """While appt-1 waits, appt-2's events are delivered at once, in the same partition."""
    world = World()
    world.downstream.failures["a1"] = 1
    world.publish("a1", b"appt-1")
    world.publish("a2", b"appt-1")
    world.publish("b1", b"appt-2")
    world.run_until(lambda: len(world.downstream.delivered) == 3)
    assert world.downstream.delivered == ["b1", "a1", "a2"]
    assert world.downstream.delivered_at["b1"] < world.downstream.delivered_at["a1"]


def test_a_parked_event_that_becomes_the_head_spends_only_its_own_attempts() -> None:
    """rescheduled waited in the 30 s tier behind scheduled; its own first failure sends it
    to the first tier (attempt 2), not on past the last tier to the DLQ."""
    world = World()
    world.downstream.failures.update(scheduled=2, rescheduled=1)
    world.publish("scheduled")
    world.publish("rescheduled")
    world.run_until(lambda: len(world.downstream.delivered) == 2)
    assert world.downstream.delivered == ["scheduled", "rescheduled"]
    assert not world.broker.records(DLQ)
    own = [h for h in world.headers(TIER_5S)
           if h.event_id == "rescheduled" and h.parked_behind is None]
    assert [h.attempts for h in own] == [1]  # its failure hop: one topic attempt made


def test_a_record_looked_at_twice_joins_once_and_is_delivered_once() -> None:
    """A copy of a parked event (a redelivery after a crash) is parked again harmlessly:
    one link, one delivery, the copy a duplicate."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    world.publish("scheduled")
    world.publish("cancelled")
    world.publish("cancelled")  # the same event again: redelivered
    seen: list[int] = []

    def done() -> bool:
        chain = world.store.chains(["appt-1"]).get("appt-1", [])
        seen.append(len(chain))
        return len(world.downstream.delivered) == 2 and \
            world.clock.now_ms() > world.downstream.delivered_at["cancelled"] + 40_000

    world.run_until(done)
    assert world.downstream.delivered == ["scheduled", "cancelled"]
    assert max(seen) == 2
    assert world.store.parked_summary().keys == 0


def test_parked_state_survives_a_restart() -> None:
    """A runner stops while cancelled is parked; a new one (same store, same broker) goes on
    and delivers in order."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    world.publish("scheduled")
    world.publish("cancelled")
    world.run_until(lambda: len(world.headers(TIER_5S)) == 2)
    assert world.downstream.delivered == []
    assert world.store.parked_summary().keys == 1
    world.run_until(lambda: len(world.downstream.delivered) == 2)
    assert world.downstream.delivered == ["scheduled", "cancelled"]


def test_hold_sends_followers_to_the_dlq_after_their_head_and_a_replay_goes_in_order() -> None:
    """scheduled fails in its tier for good; rescheduled and cancelled follow it to the DLQ,
    in order, without a call, marked parked behind it; replaying the DLQ delivers all three
    in order."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    for event_id in ("scheduled", "rescheduled", "cancelled"):
        world.publish(event_id)
    retried = False

    def fail_in_the_tier() -> bool:
        nonlocal retried
        if not retried and world.downstream.calls == ["scheduled"]:
            world.downstream.permanent.add("scheduled")
            retried = True
        return len(world.broker.records(DLQ)) == 3

    world.run_until(fail_in_the_tier)
    dead = world.headers(DLQ)
    assert [(h.event_id, h.dlq_reason, h.parked_behind) for h in dead] == [
        ("scheduled", "permanent", None), ("rescheduled", "parked", "scheduled"),
        ("cancelled", "parked", "scheduled")]
    assert world.downstream.calls == ["scheduled", "scheduled"]
    assert world.store.parked_summary().keys == 1  # held: an operator decides

    world.downstream.permanent.clear()
    for _, _, record in world.broker.records(DLQ):  # what `dlq replay` publishes
        replayed = replay_headers(decode_headers(record.headers))
        world.publish(decode_headers(record.headers).event_id or "",
                      headers=tuple(encode_headers(replayed)))
    world.run_until(lambda: len(world.downstream.delivered) == 3)
    assert world.downstream.delivered == ["scheduled", "rescheduled", "cancelled"]
    assert world.store.parked_summary().keys == 0


def _dead_letter_the_head_and_its_followers(world: World) -> None:
    """scheduled fails once, then for good in its tier; rescheduled and cancelled follow it
    to the DLQ (``hold``)."""
    world.downstream.failures["scheduled"] = 1
    for event_id in ("scheduled", "rescheduled", "cancelled"):
        world.publish(event_id)

    def fail_in_the_tier() -> bool:
        if world.downstream.calls == ["scheduled"]:
            world.downstream.permanent.add("scheduled")
        return len(world.broker.records(DLQ)) == 3

    world.run_until(fail_in_the_tier)
    world.downstream.permanent.clear()


def _parked_record(event_id: str, topic: str, offset: int, origin: int,
                   now_ms: int) -> InboundRecord:
    """A record of appt-1 parked behind ``head``, as it comes out of ``topic``."""
    headers = RecordHeaders(attempts=0, due_at_ms=now_ms, original_topic=MAIN,
                            original_partition=0, original_offset=origin,
                            parked_behind="head", event_id=event_id)
    value = CODEC.encode(sample_event("appointment.scheduled", event_id))
    return InboundRecord(topic=topic, partition=0, offset=offset, timestamp_ms=now_ms,
                         key=b"appt-1", value=value, raw_headers=tuple(encode_headers(headers)))


def test_a_follower_follows_to_the_dlq_only_once_its_predecessors_hop_is_durable() -> None:
    """The head is dead-lettered; f and g wait behind it in two tiers. f follows it to the
    DLQ; its hop commits only once f's source offset settles, which another lane may hold
    up. g, looked at meanwhile by another lane, must not go to the DLQ then: its hop could
    commit first, and the DLQ would hold g before f. g is parked instead, and follows once
    f's hop is durable. (Before, g followed at once.)"""
    clock = ManualClock()
    store = MemoryDedupStore(clock)
    now = clock.now_ms()
    store.join("appt-1", Link(event_id="head", topic=DLQ, parked_at_ms=now,
                              state="dead_lettered", origin=Position(MAIN, 0, 0)))
    store.join("appt-1", Link(event_id="f", topic=TIER_5S, parked_at_ms=now,
                              origin=Position(MAIN, 0, 1)))
    store.join("appt-1", Link(event_id="g", topic=TIER_30S, parked_at_ms=now,
                              origin=Position(MAIN, 0, 2)))
    policy = RetryPolicy(main_topic=MAIN, delays_ms=(5_000, 30_000),
                         in_process=InProcessRetry(attempts=1))
    outcomes = PendingOutcomes(store)
    order = EntityOrder(store, PER_KEY, outcomes, clock, policy.dlq_topic)
    outbox = HopOutbox()
    processor = RecordProcessor(
        policy=policy, handler=Downstream(clock), outcomes=outcomes, hops=outbox,
        telemetry=Telemetry(), clock=clock, rules=ExceptionRules(), group_id="clinic-events",
        codec=CODEC, ordering=order)

    processor.process_chunk([_parked_record("f", TIER_5S, 7, 1, now)])  # one lane
    processor.process_chunk([_parked_record("g", TIER_30S, 3, 2, now)])  # another, meanwhile
    hops = outbox.take()
    assert [(hop.fate.record.event_id, hop.topic) for hop in hops] == [
        ("f", DLQ), ("g", TIER_5S)]
    assert world_chain(store) == [("head", "dead_lettered"), ("f", "dead_lettering"),
                                  ("g", "waiting")]

    fate = hops[0].fate
    assert isinstance(fate, Republished)
    order.dead_lettered(fate)  # f's transaction committed (Runner._record_durable)
    processor.process_chunk([_parked_record("g", TIER_5S, 8, 2, now)])
    assert [(hop.fate.record.event_id, hop.topic) for hop in outbox.take()] == [("g", DLQ)]
    assert world_chain(store) == [("head", "dead_lettered"), ("f", "dead_lettered"),
                                  ("g", "dead_lettering")]


@pytest.mark.parametrize("marked", [True, False], ids=["marked-as-usual", "left-by-a-crash"])
def test_a_hop_seen_under_way_is_called_a_crash_leftover_only_if_still_unmarked(
    caplog: pytest.LogCaptureFixture, marked: bool,
) -> None:
    """A follower viewed while its head's DLQ hop was under way notes the head's link; the
    hop commits and the link is marked a moment later, as usual. The check that runs after
    the grace period must not then report a crash, nor touch the chain."""
    clock = ManualClock()
    store = MemoryDedupStore(clock)
    now = clock.now_ms()
    hop = Position(MAIN, 0, 0)
    store.join("appt-1", Link(event_id="head", topic=DLQ, parked_at_ms=now,
                              state="dead_lettering", origin=hop, hop=hop))
    policy = RetryPolicy(main_topic=MAIN, delays_ms=(5_000,))
    order = EntityOrder(store, PER_KEY, PendingOutcomes(store), clock, policy.dlq_topic)
    follower = _parked_record("f", TIER_5S, 7, 1, now)
    follower.decode(CODEC)
    order.view([follower])
    assert order.unconfirmed
    if marked:
        store.confirm_dead_letter("appt-1", "head", hop)
    clock.advance(6_000)
    with caplog.at_level(logging.INFO, logger="clinic_events.ordering"):
        order.confirm_durable(lambda partitions: {part: 1 for part in partitions})
    crashes = [r for r in caplog.records if "crash after its commit" in r.getMessage()]
    assert len(crashes) == (0 if marked else 1)
    assert world_chain(store) == [("head", "dead_lettered")]
    assert not order.unconfirmed


def world_chain(store: MemoryDedupStore, key: str = "appt-1") -> list[tuple[str, str]]:
    return [(link.event_id, link.state) for link in store.chains([key]).get(key, [])]


def test_a_kill_after_a_dead_letters_commit_holds_its_key_seconds_not_days() -> None:
    """The head's DLQ hop commits, and the instance is killed before it marks the head
    dead-lettered. Nobody processes the head's record again (its offset is committed), so
    the link stays as the kill left it: the next instance finds the hop durable (the
    group's offset is past its source record) and the follower follows within seconds.
    (Before, the link said "waiting in the 5 s tier", and the follower re-parked behind it
    until the link expired, 7 days later.)"""
    world = World()
    world.downstream.failures["scheduled"] = 1
    world.publish("scheduled")
    world.publish("cancelled")

    def fail_in_the_tier() -> bool:
        if world.downstream.calls == ["scheduled"]:
            world.downstream.permanent.add("scheduled")
        return len(world.broker.records(DLQ)) == 1

    def killed_after_each_commit(runner: Runner) -> None:
        runner._record_durable = lambda fate: None  # type: ignore[method-assign]

    world.run_until(fail_in_the_tier, aborted_commits=0, prepare=killed_after_each_commit)
    assert world.chain()[0][1] != "dead_lettered"  # the kill left it unmarked
    started = world.clock.now_ms()
    world.run_until(lambda: len(world.broker.records(DLQ)) == 2
                    or world.clock.now_ms() > started + 600_000, aborted_commits=0)
    assert [(h.event_id, h.dlq_reason, h.parked_behind) for h in world.headers(DLQ)] == [
        ("scheduled", "permanent", None), ("cancelled", "parked", "scheduled")]
    assert world.clock.now_ms() < started + 60_000
    assert world.chain() == [("scheduled", "dead_lettered"), ("cancelled", "dead_lettered")]
    assert world.downstream.calls == ["scheduled", "scheduled"]


def test_a_kill_before_a_dead_letters_commit_leaves_one_fate_each_in_order() -> None:
    """The head is marked dead-lettering and its DLQ hop handed over, but no commit
    happens before the kill: no dead letter exists. Its record is processed again, and
    delivered this time; then its follower. Nothing reaches the DLQ."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    world.publish("scheduled")
    world.publish("cancelled")
    commits: list[MemoryTransactions] = []

    def keep_transactions(runner: Runner) -> None:
        assert isinstance(runner._transactions, MemoryTransactions)
        commits.append(runner._transactions)

    def fail_in_the_tier_then_kill() -> bool:
        if world.downstream.calls == ["scheduled"] and world.broker.records(TIER_5S):
            world.downstream.permanent.add("scheduled")
            commits[0].abort_next(10_000)  # nothing commits any more: the kill
        return world.downstream.calls == ["scheduled", "scheduled"]

    world.run_until(fail_in_the_tier_then_kill, aborted_commits=0, prepare=keep_transactions)
    assert world.chain()[0] == ("scheduled", "dead_lettering")
    world.downstream.permanent.clear()
    world.run_until(lambda: len(world.downstream.delivered) == 2, aborted_commits=0)
    assert world.downstream.delivered == ["scheduled", "cancelled"]
    assert world.broker.records(DLQ) == []
    assert world.store.parked_summary().keys == 0


def test_a_discarded_head_lets_the_next_one_lead_and_hold_in_its_turn() -> None:
    """`dlq discard` of the held head releases its link: rescheduled, replayed, is delivered
    (not sent back behind a head that will never come); cancelled, still in the DLQ, is the
    head now and holds a new event of the key until it is replayed too. Order is kept."""
    world = World()
    _dead_letter_the_head_and_its_followers(world)
    head, rescheduled, cancelled = world.dead_letters()
    assert world.chain() == [("scheduled", "dead_lettered"), ("rescheduled", "dead_lettered"),
                             ("cancelled", "dead_lettered")]

    release_discarded(world.store, [head])
    assert world.chain() == [("rescheduled", "dead_lettered"), ("cancelled", "dead_lettered")]

    world.replay(rescheduled)
    world.publish("noshow")
    world.run_until(lambda: len(world.broker.records(DLQ)) == 4)
    assert world.downstream.delivered == ["rescheduled"]
    noshow = world.dead_letters()[3]
    assert (noshow.event_id, noshow.headers.parked_behind) == ("noshow", "cancelled")

    world.replay(cancelled)
    world.replay(noshow)
    world.run_until(lambda: len(world.downstream.delivered) == 3)
    assert world.downstream.delivered == ["rescheduled", "cancelled", "noshow"]
    assert world.downstream.calls.count("scheduled") == 2  # the discarded one, never again
    assert world.store.parked_summary().keys == 0


def test_a_discarded_head_lets_a_follower_still_in_a_tier_be_delivered() -> None:
    """scheduled is dead-lettered while cancelled waits in the tier behind it; the discard
    comes before cancelled is looked at again, which is then delivered, not dead-lettered."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    world.publish("scheduled")
    world.publish("cancelled")
    discarded = False

    def discard_once_dead_lettered() -> bool:
        nonlocal discarded
        if world.downstream.calls == ["scheduled"]:
            world.downstream.permanent.add("scheduled")
        if not discarded and world.broker.records(DLQ):
            assert world.chain() == [("scheduled", "dead_lettered"), ("cancelled", "waiting")]
            release_discarded(world.store, world.dead_letters())
            discarded = True
        return world.downstream.delivered == ["cancelled"]

    world.run_until(discard_once_dead_lettered)
    assert [h.event_id for h in world.headers(DLQ)] == ["scheduled"]
    assert world.store.parked_summary().keys == 0


def test_a_discard_leaves_a_link_waiting_in_a_tier_in_place() -> None:
    """A second, stale DLQ copy of an event that was replayed and waits in a tier again
    must not release it: its followers would overtake it."""
    world = World()
    now = world.clock.now_ms()
    for event_id in ("scheduled", "cancelled"):
        world.store.join("appt-1", Link(event_id=event_id, topic=TIER_5S, parked_at_ms=now))
    stale = parse_dlq_record(partition=0, offset=0, timestamp_ms=0, key=b"appt-1",
                             value=CODEC.encode(sample_event("appointment.scheduled",
                                                             "scheduled")),
                             headers=(), codec=CODEC)
    unkeyed = parse_dlq_record(partition=0, offset=1, timestamp_ms=0, key=None, value=b"?",
                               headers=(), codec=CODEC)
    release_discarded(world.store, [stale, unkeyed])
    assert world.chain() == [("scheduled", "waiting"), ("cancelled", "waiting")]


def test_a_parked_probe_does_not_leave_the_breaker_waiting_for_ever() -> None:
    """During an outage the waiting event picked as the probe may be one that is parked
    behind an earlier event of its key: it is moved without a call, so no answer comes. The
    next waiting event probes instead; once the downstream is back, both events of the key
    are delivered, in order. (Before, the breaker waited for that answer with every
    partition held, and the consumer stood still until restarted.)"""
    world = World(main_partitions=2)
    started = world.clock.now_ms()
    world.downstream.down_until_ms = started + 20_000
    world.publish("scheduled")  # fails, and waits in the 5 s tier: appt-1 has a chain
    for n in range(2, 7):  # the outage: the breaker opens, the last of them is held
        world.publish(f"x{n}", f"appt-{n}".encode(), partition=1)
    breaker = OutageBreaker(BreakerPolicy(), world.clock, random.Random(7))
    moved = False

    def done() -> bool:
        nonlocal moved
        assert world.runner is not None
        assert world.consumer is not None
        if not moved and world.runner.held:
            # partition 1 goes to another instance, with the events held for the outage;
            # appt-1's next event comes in, and is the only one waiting: the probe
            world.consumer.rebalance(lose=[(MAIN, 1)])
            world.publish("cancelled")
            moved = True
        delivered = [e for e in world.downstream.delivered if e in ("scheduled", "cancelled")]
        return len(delivered) == 2 or world.clock.now_ms() > started + 600_000

    world.run_until(done, breaker=breaker)
    assert [e for e in world.downstream.delivered if e in ("scheduled", "cancelled")] == [
        "scheduled", "cancelled"]
    assert world.downstream.calls.count("cancelled") == 1  # parked, then delivered once
    assert world.clock.now_ms() < started + 60_000
    assert not breaker.is_open


def test_release_lets_followers_go_on_after_a_dead_lettered_head() -> None:
    """With after_dead_letter = "release" the dead-lettered head leaves its chain and the
    parked followers reach the downstream."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    for event_id in ("scheduled", "rescheduled", "cancelled"):
        world.publish(event_id)
    policy = OrderingPolicy(after_dead_letter="release")
    world.downstream.permanent.add("scheduled")
    world.run_until(lambda: len(world.downstream.delivered) == 2, ordering=policy)
    assert [h.event_id for h in world.headers(DLQ)] == ["scheduled"]
    assert world.downstream.delivered == ["rescheduled", "cancelled"]
    assert world.store.parked_summary().keys == 0


def test_a_head_dead_lettered_at_once_holds_nothing_back() -> None:
    """Only an event that waits in a retry tier starts a chain: one rejected outright (a
    permanent failure on the main topic) lets its key's later events through."""
    world = World()
    world.downstream.permanent.add("scheduled")
    world.publish("scheduled")
    world.publish("cancelled")
    world.run_until(lambda: len(world.downstream.delivered) == 1)
    assert world.downstream.delivered == ["cancelled"]


def test_mode_none_is_todays_behaviour() -> None:
    """Without ordering the later event overtakes the one in the retry tier, and nothing is
    parked."""
    world = World()
    world.downstream.failures["scheduled"] = 1
    world.publish("scheduled")
    world.publish("cancelled")
    world.run_until(lambda: len(world.downstream.delivered) == 2, ordering=None)
    assert world.downstream.delivered == ["cancelled", "scheduled"]
    assert world.store.parked_summary() == ParkedSummary(0, None)
