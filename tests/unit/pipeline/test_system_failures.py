"""A failing system, not failing events: the outage breaker and the dead-letter flood guard.

The real ``Runner`` and ``RecordProcessor`` run on the in-memory broker with a manual clock
(one lane, on the poll thread), so a 30-minute outage takes milliseconds and every call to
the downstream is counted with its simulated time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from consumer.dedup.store import MemoryDedupStore
from consumer.delivery.handlers import DeliveryContext
from consumer.errors import PermanentError, TransientError
from consumer.events.codec import EventCodec, EventRecord
from consumer.pipeline.breaker import OutageBreaker
from consumer.pipeline.flood_guard import DeadLetterGuard
from consumer.pipeline.memory_broker import (
    MemoryBroker,
    MemoryConsumer,
    MemoryProducer,
    StoredRecord,
)
from consumer.pipeline.notifier import Notifier
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.runner import Runner
from retry_topics.clock import ManualClock
from retry_topics.limits import BreakerPolicy, FloodGuardPolicy
from retry_topics.policy import InProcessRetry, RetryPolicy
from retry_topics.system_state import RECOVERED, RESTATE_MS, SystemState
from tests.unit.pipeline.inline_runner import inline_runner, run_until
from tests.unit.sample_events import sample_event

MAIN = "clinic.events"
DELAYS_MS = (1_000, 2_000, 4_000)
DLQ = f"{MAIN}.dlq"
CODEC = EventCodec()


@dataclass
class Downstream:
    """Answers by the clock: ``down_until_ms`` 503 for everyone, ``failing`` 503 always,
    ``status`` for everyone else (200 or a permanent 404)."""

    clock: ManualClock
    down_until_ms: int = 0
    failing: set[str] = field(default_factory=set)
    not_found: bool = False
    calls: list[tuple[str, int]] = field(default_factory=list)  # (event_id, now_ms)
    delivered: dict[str, int] = field(default_factory=dict)  # event_id -> when

    def deliver(self, event: EventRecord, context: DeliveryContext) -> None:
        now = self.clock.now_ms()
        self.calls.append((context.event_id, now))
        if now < self.down_until_ms or context.event_id in self.failing:
            raise TransientError("POST /events answered 503", error_class="http.503")
        if self.not_found:
            raise PermanentError("POST /wrong answered 404", error_class="http.404")
        self.delivered.setdefault(context.event_id, now)

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class Board:
    """Keeps what the runner stated, in order."""

    states: list[SystemState] = field(default_factory=list)

    def state(self, state: SystemState) -> None:
        self.states.append(state)

    def conditions(self) -> list[str]:
        return [state.condition for state in self.states]


@dataclass
class World:
    clock: ManualClock
    broker: MemoryBroker
    downstream: Downstream
    board: Board = field(default_factory=Board)
    policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(
        main_topic=MAIN, delays_ms=DELAYS_MS, in_process=InProcessRetry(attempts=1)))
    consumers: dict[int, MemoryConsumer] = field(default_factory=dict)  # by id of its runner

    def publish(self, count: int, *, start: int = 0) -> list[str]:
        ids = []
        for n in range(start, start + count):
            event: dict[str, Any] = sample_event("appointment.scheduled", f"evt-{n:04}")
            event["payload"]["appointment_id"] = f"appt-{n}"
            self.broker.append(MAIN, StoredRecord(f"appt-{n}".encode(), CODEC.encode(event), (),
                                                  self.clock.now_ms()), n % 3)
            ids.append(f"evt-{n:04}")
        return ids

    def runner(self, *, breaker: BreakerPolicy | None = None,
               guard: FloodGuardPolicy | None = None,
               notifier: Notifier | None = None) -> Runner:
        consumer = MemoryConsumer(self.broker)
        runner = inline_runner(
            consumer, MemoryProducer(self.broker), policy=self.policy, handler=self.downstream,
            outcomes=PendingOutcomes(MemoryDedupStore(self.clock)), clock=self.clock,
            breaker=OutageBreaker(breaker or BreakerPolicy(), self.clock),
            guard=DeadLetterGuard(guard or FloodGuardPolicy()), drain_timeout_s=0.1,
            status=self.board, instance="test:1", notifier=notifier)
        self.consumers[id(runner)] = consumer
        return runner

    def run_until(self, runner: Runner, done: Callable[[], bool],
                  on_each_poll: Callable[[], None] | None = None) -> None:
        """Run ``runner`` until ``done``; ``on_each_poll`` lets the test act as time passes."""
        run_until(runner, self.consumers[id(runner)], done, on_each_poll)

    def dead_letters(self) -> list[str]:
        return [record.key.decode() for _, _, record in self.broker.records(DLQ)
                if record.key is not None]


def _world() -> World:
    clock = ManualClock()
    broker = MemoryBroker(clock, max_idle_ms=3 * 3_600_000)
    broker.create_topic(MAIN, 3)
    for tier_delay in ("1s", "2s", "4s"):
        broker.create_topic(f"{MAIN}.retry.{tier_delay}")
    broker.create_topic(DLQ)
    return World(clock, broker, Downstream(clock))


def test_a_30_minute_outage_dead_letters_nothing_and_spends_no_retry_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Events keep arriving through 30 minutes of 503s: none is dead-lettered, the failing
    API sees at most a probe a second on average, and every event is delivered within 10 s
    of recovery."""
    world = _world()
    outage_ms = 30 * 60_000
    started = world.clock.now_ms()
    world.downstream.down_until_ms = started + outage_ms
    caplog.set_level(logging.WARNING, logger="clinic_events")
    runner = world.runner()
    published = world.publish(20)
    more_at = [started + minute * 60_000 for minute in (5, 12, 25)]

    def arrivals() -> None:
        while more_at and world.clock.now_ms() >= more_at[0]:
            more_at.pop(0)
            published.extend(world.publish(10, start=len(published)))

    world.run_until(runner, lambda: len(world.downstream.delivered) == 50 and not more_at,
                    on_each_poll=arrivals)

    assert world.dead_letters() == []
    recovered = world.downstream.down_until_ms
    during = [at for _, at in world.downstream.calls if at < recovered]
    assert len(during) <= outage_ms / 1000, f"{len(during)} calls in a 30-minute outage"
    latest = max(world.downstream.delivered.values())
    assert latest - recovered <= 10_000, f"delivered {latest - recovered} ms after recovery"
    assert set(world.downstream.delivered) == set(published)
    assert runner.stats["retried"] <= 5, "the outage spent retry budget"
    assert "downstream unavailable" in caplog.text
    assert "downstream available again" in caplog.text
    # stated when it opened, restated every 30 s while open, ok once it closed
    conditions = world.board.conditions()
    assert conditions[0] == "outage"
    assert conditions.count("outage") >= outage_ms // RESTATE_MS - 1
    assert conditions[-1] == "ok"
    assert world.board.states[-1].reason == RECOVERED  # lag: what it held goes on now
    assert {s.since_ms for s in world.board.states if s.condition == "outage"} == {
        world.board.states[0].since_ms}


def test_one_event_failing_while_the_others_succeed_goes_through_the_tiers() -> None:
    """A 503 for one event only is that event's failure: tiers, then the DLQ, as before."""
    world = _world()
    world.downstream.failing.add("evt-0001")
    runner = world.runner()
    world.publish(30)
    world.run_until(runner, lambda: bool(world.dead_letters())
                    and len(world.downstream.delivered) == 29)
    assert world.dead_letters() == ["appt-1"]
    assert sum(1 for eid, _ in world.downstream.calls if eid == "evt-0001") == 4


def test_a_stream_failing_permanently_halts_at_the_limit_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every call answers 404 (a wrong delivery.url): 20 dead letters, then a halt naming
    the cause; after the fix and a restart the other 280 events are delivered."""
    world = _world()
    world.downstream.not_found = True
    caplog.set_level(logging.WARNING, logger="clinic_events")
    published = world.publish(300)
    runner = world.runner(guard=FloodGuardPolicy(max_consecutive=20))
    halted_at: list[int] = []

    def halted() -> bool:
        if runner._guard is not None and runner._guard.halted and not halted_at:
            halted_at.append(world.clock.now_ms())
        return bool(halted_at) and world.clock.now_ms() - halted_at[0] > 5_000

    world.run_until(runner, halted)
    assert len(world.dead_letters()) == 20
    assert world.board.conditions() == ["halted", "ok"]  # ok: the instance stopped
    assert world.board.states[-1].reason == ""  # not an outage that ended
    assert "check delivery.url" in world.board.states[0].reason
    assert "every one answered 404: check delivery.url" in caplog.text
    assert len(world.downstream.calls) <= 21 + 3  # the 21st call, and one per lane at most

    world.downstream.not_found = False  # the URL is fixed; the consumer restarts
    restarted = world.runner(guard=FloodGuardPolicy(max_consecutive=20))
    world.run_until(restarted, lambda: len(world.downstream.delivered) == 280)
    dead = set(world.dead_letters())
    assert {f"evt-{n:04}" for n in range(300)} == set(published)
    assert set(world.downstream.delivered) | {f"evt-{int(k.split('-')[1]):04}" for k in dead} \
        == set(published)
    assert len(world.dead_letters()) == 20


def test_a_restart_with_the_same_mistake_halts_again_only_after_a_fresh_run() -> None:
    world = _world()
    world.downstream.not_found = True
    world.publish(100)
    first = world.runner(guard=FloodGuardPolicy(max_consecutive=5))
    world.run_until(first, lambda: first._guard is not None and first._guard.halted)
    assert len(world.dead_letters()) == 5
    again = world.runner(guard=FloodGuardPolicy(max_consecutive=5))
    world.run_until(again, lambda: again._guard is not None and again._guard.halted)
    assert len(world.dead_letters()) == 10
