"""Exactly-once hops on the in-memory broker: a hop and the offset it settles, together.

The runner with ``Transactions`` commits every hop (to a retry tier or the DLQ) in one
transaction with the source offsets it settles. These tests prove, deterministically, what
a crash or an abort leaves: both or neither, so the next owner never gives an event a
second fate; and that a hop of a partition lost meanwhile is never produced.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping, Sequence

from consumer.dedup.store import MemoryDedupStore
from consumer.observability.telemetry import Telemetry
from consumer.pipeline.broker import Partition
from consumer.pipeline.lanes import LaneFailure
from consumer.pipeline.memory_broker import (
    MemoryBroker,
    MemoryConsumer,
    MemoryProducer,
    MemoryTransactions,
)
from consumer.pipeline.outbox import Hop, HopSender
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.records import Delivered, Fate, InboundRecord, Republished
from consumer.pipeline.runner import Runner
from retry_topics.clock import ManualClock
from retry_topics.headers import decode_headers
from retry_topics.policy import RetryPolicy, RetryTier
from retry_topics.routing import RetryTo
from tests.unit.pipeline.test_runner_on_memory_broker import (
    DLQ,
    MAIN,
    TIER_5S,
    TIER_30S,
    Loop,
    ScriptedHandler,
    build_loop,
)


class RecordedTransactions(MemoryTransactions):
    """Notes what each committed transaction held."""

    def __init__(self, broker: MemoryBroker, consumer: MemoryConsumer) -> None:
        super().__init__(broker, consumer)
        self.log: list[tuple[list[str], dict[Partition, int]]] = []

    def commit(self, hops: Sequence[Hop], offsets: Mapping[Partition, int]) -> None:
        super().commit(hops, offsets)
        self.log.append(([hop.topic for hop in hops], dict(offsets)))


def _loop(broker: MemoryBroker, store: MemoryDedupStore,
          handler: ScriptedHandler) -> tuple[Loop, RecordedTransactions]:
    loop = build_loop(broker=broker, store=store, handler=handler,
                      transactions=RecordedTransactions)
    assert isinstance(loop.transactions, RecordedTransactions)
    return loop, loop.transactions


def _broker() -> MemoryBroker:
    broker = MemoryBroker(ManualClock(), max_idle_ms=3_600_000)
    for topic in (MAIN, TIER_5S, TIER_30S, DLQ):
        broker.create_topic(topic)
    return broker


def test_a_hop_is_committed_in_the_same_transaction_as_the_offset_it_settles() -> None:
    broker = _broker()
    loop, transactions = _loop(broker, MemoryDedupStore(broker.clock),
                               ScriptedHandler(broker.clock, failures={"evt-a": 1}))
    loop.publish("evt-a")
    loop.run_until(lambda: loop.runner.stats["delivered"] == 1)
    hop_commits = [(topics, offsets.get((MAIN, 0))) for topics, offsets in transactions.log
                   if topics]
    assert hop_commits == [([TIER_5S], 1)]
    assert loop.consumer.stored == {}  # nothing goes through the consumer's own commits
    assert broker.committed((MAIN, 0)) == 1
    assert broker.committed((TIER_5S, 0)) == 1


def test_an_aborted_transaction_is_tried_again_without_calling_the_handler_again() -> None:
    broker = _broker()
    loop, transactions = _loop(broker, MemoryDedupStore(broker.clock),
                               ScriptedHandler(broker.clock, failures={"evt-b": 1}))
    transactions.abort_next(2)
    loop.publish("evt-b")
    loop.run_until(lambda: loop.runner.stats["delivered"] == 1)
    assert transactions.aborted == 2
    assert len(broker.records(TIER_5S)) == 1  # the aborted attempts left nothing
    assert [topic for _, _, topic in loop.handler.calls] == [MAIN, TIER_5S]


def test_a_crash_before_the_commit_leaves_neither_the_dead_letter_nor_the_offset() -> None:
    """The issue's repro: the first instance dead-letters the event, but dies before the
    transaction commits (here: every commit aborts, then it stops). The next instance,
    with the same dedup store, finds no outcome and no committed offset, and decides the
    event afresh: one dead letter in all, not two, and never also delivered."""
    broker = _broker()
    store = MemoryDedupStore(broker.clock)
    first, transactions = _loop(broker, store, ScriptedHandler(broker.clock,
                                                               permanent={"evt-c"}))
    transactions.abort_next(10_000)
    first.publish("evt-c")
    first.run_until(lambda: len(first.handler.calls) == 1 and transactions.aborted >= 3)
    assert broker.records(DLQ) == []
    assert broker.committed((MAIN, 0)) is None
    assert store.lookup(["evt-c"]) == {}

    second, _ = _loop(broker, store, ScriptedHandler(broker.clock, permanent={"evt-c"}))
    second.run_until(lambda: second.runner.stats["dead_lettered"] == 1)
    (dead,) = broker.records(DLQ)
    assert decode_headers(dead[2].headers).event_id == "evt-c"
    assert broker.committed((MAIN, 0)) == 1
    assert store.lookup(["evt-c"]) == {"evt-c": "dead_lettered"}


def test_a_hop_of_a_partition_lost_before_its_commit_is_dropped_never_produced() -> None:
    """The session expired while the hop waited for its transaction: the new owner routes
    the record, so this instance must not (its transaction would also be fenced)."""
    broker = _broker()
    handler = ScriptedHandler(broker.clock, failures={"evt-d": 1})
    loop, transactions = _loop(broker, MemoryDedupStore(broker.clock), handler)
    transactions.abort_next(1)  # the hop waits one more pass, as during a slow commit
    loop.publish("evt-d")
    lost = False

    def done() -> bool:
        nonlocal lost
        if handler.calls and not lost:
            loop.consumer.rebalance(lose=[(MAIN, 0)])
            lost = True
        return lost and transactions.aborted == 1 and not loop.runner.assignment & {(MAIN, 0)}

    loop.run_until(done)
    assert broker.records(TIER_5S) == []
    assert loop.runner.stats["dropped"] == 1
    assert broker.committed((MAIN, 0)) is None


class OutOfOrderLanes:
    """Lanes that hop every record but the first at once, and finish the first (delivered)
    only when the test says: an earlier record still in a worker's hands."""

    def __init__(self, hops: HopSender) -> None:
        self._hops = hops
        self._first: InboundRecord | None = None
        self.results: queue.SimpleQueue[list[Fate] | LaneFailure] = queue.SimpleQueue()

    def dispatch(self, records: Sequence[InboundRecord]) -> None:
        for record in records:
            if self._first is None:
                self._first = record
                continue
            decision = RetryTo(topic=TIER_5S, tier=RetryTier(index=1, topic=TIER_5S,
                                                             delay_ms=5_000),
                               attempts=1, due_at_ms=5_000)
            fate = Republished(record, decision, "http.503", "retried")
            self._hops.send(Hop(fate, TIER_5S, record.key, record.value, []))

    def finish_first(self) -> None:
        assert self._first is not None
        self.results.put([Delivered(self._first)])

    def in_flight_limit(self, ceiling: int) -> int:
        return ceiling

    def idle(self) -> bool:
        return True

    def discard_pending(self) -> None:
        """Nothing is queued."""

    def stop(self, timeout_s: float = 30.0, *, discard_pending: bool = True) -> None:
        """Nothing runs."""


def test_a_hop_waits_for_the_transaction_that_commits_past_its_source_record() -> None:
    """Offsets are committed in order: while record 0 is still being handled, the hop of
    record 1 is not committed (a kill would leave it in its tier while record 1 is read
    again, a second hop); it goes in the transaction that commits offset 2."""
    broker = _broker()
    clock = broker.clock
    assert isinstance(clock, ManualClock)
    consumer = MemoryConsumer(broker)
    transactions = RecordedTransactions(broker, consumer)
    lanes: list[OutOfOrderLanes] = []

    def factory(hops: HopSender) -> OutOfOrderLanes:
        lanes.append(OutOfOrderLanes(hops))
        return lanes[0]

    runner = Runner(consumer=consumer, producer=MemoryProducer(broker),
                    policy=RetryPolicy(main_topic=MAIN, delays_ms=(5_000, 30_000)),
                    lanes_factory=factory,  # type: ignore[arg-type]
                    outcomes=PendingOutcomes(MemoryDedupStore(clock)), clock=clock,
                    telemetry=Telemetry(), drain_timeout_s=0.1, transactions=transactions)
    loop = Loop(broker, consumer, runner, ScriptedHandler(clock), clock)
    loop.publish("evt-0")
    loop.publish("evt-1")
    passes = 0

    def done() -> bool:
        nonlocal passes
        passes += 1
        if passes == 20:  # long after the hop was taken, and several commits since
            assert broker.records(TIER_5S) == []
            lanes[0].finish_first()
        return passes > 20 and runner.stats["retried"] == 1

    loop.run_until(done)
    hop_commits = [offsets.get((MAIN, 0)) for topics, offsets in transactions.log if topics]
    assert hop_commits == [2]
    assert len(broker.records(TIER_5S)) == 1


def test_a_commit_in_doubt_that_went_through_is_not_committed_again() -> None:
    """The broker went away during the commit, which committed nonetheless: the same batch
    is brought again, the broker says it is done, and the hop exists once."""
    broker = _broker()
    loop, transactions = _loop(broker, MemoryDedupStore(broker.clock),
                               ScriptedHandler(broker.clock, failures={"evt-e": 1}))
    transactions.doubt_next(committed=True)
    loop.publish("evt-e")
    loop.run_until(lambda: loop.runner.stats["delivered"] == 1)
    assert len(broker.records(TIER_5S)) == 1
    assert loop.runner.stats["retried"] == 1
    assert [topic for _, _, topic in loop.handler.calls] == [MAIN, TIER_5S]


def test_a_commit_in_doubt_that_the_broker_aborted_is_made_again() -> None:
    broker = _broker()
    loop, transactions = _loop(broker, MemoryDedupStore(broker.clock),
                               ScriptedHandler(broker.clock, failures={"evt-f": 1}))
    transactions.doubt_next(committed=False)
    loop.publish("evt-f")
    loop.run_until(lambda: loop.runner.stats["delivered"] == 1)
    assert transactions.aborted == 1
    assert len(broker.records(TIER_5S)) == 1
    assert [topic for _, _, topic in loop.handler.calls] == [MAIN, TIER_5S]
