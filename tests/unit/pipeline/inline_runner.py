"""The real run loop assembled for tests on the in-memory broker, and a way to run it to a point.

Every run-loop test file wires the same parts: the real ``Runner`` and ``RecordProcessor`` on
one inline lane (the poll thread), over a ``MemoryConsumer`` on a manual clock. What differs
between them (the handler, the policy, a breaker, per-key ordering, transactions) is passed
in, so each file says only what its tests are about.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer.delivery.handlers import DeliveryHandler
from consumer.events.codec import EventCodec
from consumer.observability.telemetry import Telemetry
from consumer.pipeline.breaker import OutageBreaker
from consumer.pipeline.flood_guard import DeadLetterGuard
from consumer.pipeline.lanes import InlineLane
from consumer.pipeline.memory_broker import MemoryConsumer, MemoryProducer
from consumer.pipeline.ordering import EntityOrder
from consumer.pipeline.outbox import HopSender
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.processing import RecordProcessor
from consumer.pipeline.records import InboundRecord
from consumer.pipeline.runner import Runner
from retry_topics.classification import ExceptionRules
from retry_topics.clock import ManualClock
from retry_topics.policy import RetryPolicy

CODEC = EventCodec()


def inline_runner(consumer: MemoryConsumer, producer: MemoryProducer, *, policy: RetryPolicy,
                  handler: DeliveryHandler, outcomes: PendingOutcomes, clock: ManualClock,
                  ordering: EntityOrder | None = None, breaker: OutageBreaker | None = None,
                  guard: DeadLetterGuard | None = None, **runner_options: Any) -> Runner:
    """A ``Runner`` whose records are processed on its own thread, one chunk at a time;
    ``runner_options`` go to the ``Runner`` as they are (``transactions``, ``status``...)."""
    telemetry = Telemetry()

    def lanes(hops: HopSender) -> InlineLane:
        processor = RecordProcessor(
            policy=policy, handler=handler, outcomes=outcomes, hops=hops, telemetry=telemetry,
            clock=clock, rules=ExceptionRules(), group_id="clinic-events", codec=CODEC,
            ordering=ordering, breaker=breaker, guard=guard)
        return InlineLane(processor.process_chunk, abandon=processor.abandon)

    return Runner(consumer=consumer, producer=producer, policy=policy, lanes_factory=lanes,
                  outcomes=outcomes, clock=clock, telemetry=telemetry, ordering=ordering,
                  breaker=breaker, guard=guard, **runner_options)


def run_until(runner: Runner, consumer: MemoryConsumer, done: Callable[[], bool],
              on_each_poll: Callable[[], None] | None = None) -> None:
    """Run ``runner`` on this thread until the first poll where ``done`` holds;
    ``on_each_poll`` lets a test act as simulated time passes."""
    consume = consumer.consume

    def consume_until_done(max_records: int, timeout_s: float) -> list[InboundRecord]:
        if on_each_poll is not None:
            on_each_poll()
        if done():
            runner.stop()
            return []
        return consume(max_records, timeout_s)

    consumer.consume = consume_until_done  # type: ignore[method-assign]
    try:
        runner.run()
    finally:
        consumer.consume = consume  # type: ignore[method-assign]
