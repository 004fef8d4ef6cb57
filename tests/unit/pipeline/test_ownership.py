"""Work on a partition this instance no longer owns stops: no call, no republish."""

from __future__ import annotations

from typing import Any

from consumer.dedup.store import MemoryDedupStore
from consumer.delivery.handlers import DeliveryContext
from consumer.errors import TransientError
from consumer.events.codec import EventCodec
from consumer.observability.telemetry import Telemetry
from consumer.pipeline.outbox import AckedHops, OnAck
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.ownership import Ownership
from consumer.pipeline.processing import RecordProcessor
from consumer.pipeline.records import InboundRecord
from retry_topics.classification import ExceptionRules
from retry_topics.clock import ManualClock
from retry_topics.policy import InProcessRetry, RetryPolicy
from tests.unit.sample_events import sample_event

MAIN = "clinic.events"
TP = (MAIN, 0)


class LosingHandler:
    """Fails with a 503; ``lose`` is called during the call (the session expires then)."""

    def __init__(self, lose: Any) -> None:
        self.lose = lose
        self.calls = 0

    def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
        self.calls += 1
        self.lose()
        raise TransientError("POST /events answered 503", error_class="http.503")

    def close(self) -> None:
        """Nothing to release."""


class Publisher:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes]], on_ack: OnAck) -> None:
        self.sent.append(topic)


def _processor(handler: Any, publisher: Publisher, ownership: Ownership) -> RecordProcessor:
    clock = ManualClock()
    return RecordProcessor(
        policy=RetryPolicy(main_topic=MAIN, delays_ms=(5_000,),
                           in_process=InProcessRetry(attempts=1)),
        handler=handler, outcomes=PendingOutcomes(MemoryDedupStore(clock)),
        hops=AckedHops(publisher, lambda fate, error: None), telemetry=Telemetry(),
        clock=clock, rules=ExceptionRules(), group_id="g", ownership=ownership)


def _record(ownership: Ownership) -> InboundRecord:
    record = InboundRecord(MAIN, 0, 7, 1_000, b"appt-1",
                           EventCodec().encode(sample_event("appointment.scheduled")), ())
    record.generation = ownership.generation(TP)
    return record


def test_a_record_of_a_partition_lost_before_its_turn_is_dropped_without_a_call() -> None:
    ownership = Ownership()
    ownership.claim([TP])
    handler, publisher = LosingHandler(lambda: None), Publisher()
    record = _record(ownership)
    ownership.release([TP])  # lost while the record waited for a worker
    (fate,) = _processor(handler, publisher, ownership).process_chunk([record])
    assert fate.kind == "dropped"
    assert handler.calls == 0
    assert publisher.sent == []


def test_a_record_whose_partition_is_lost_during_its_call_is_not_republished() -> None:
    """The new owner sends it to the retry tier; a second retry record would be a second
    fate."""
    ownership = Ownership()
    ownership.claim([TP])
    publisher = Publisher()
    handler = LosingHandler(lambda: ownership.release([TP]))
    record = _record(ownership)
    (fate,) = _processor(handler, publisher, ownership).process_chunk([record])
    assert fate.kind == "dropped"
    assert handler.calls == 1
    assert publisher.sent == []


def test_a_partition_assigned_again_is_a_new_generation() -> None:
    """A record accepted before a revoke must not pass for one of the new assignment."""
    ownership = Ownership()
    ownership.claim([TP])
    old = _record(ownership)
    ownership.release([TP])
    ownership.claim([TP])
    assert not ownership.owns(old)
    assert ownership.owns(_record(ownership))
