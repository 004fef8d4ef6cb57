"""Delivered outcomes are durable about a tenth of a second after their call, whatever the
next call does (issue 17, part 2): staged as each call ends, and written by the
``LingerWatch`` when the poll thread is busy elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumer.dedup.store import MemoryDedupStore
from consumer.delivery.handlers import DeliveryContext
from consumer.pipeline.outcome_buffer import PendingOutcomes
from tests.unit.pipeline.test_processing import Fixture, record
from tests.unit.sample_events import sample_event


class CountingStore(MemoryDedupStore):
    """Counts the writes of delivered outcomes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    def record_delivered(self, event_ids: Sequence[str]) -> None:
        self.writes.append(list(event_ids))
        super().record_delivered(event_ids)


def test_a_delivery_staged_at_two_ticks_is_written_by_the_watch_and_once_only() -> None:
    store = CountingStore()
    outcomes = PendingOutcomes(store)
    outcomes.stage_one("evt-a")
    outcomes.record_lingering()  # first seen: the poll thread has a tick to write it
    assert store.writes == []
    outcomes.record_lingering()  # still staged a tick later: the poll thread is busy
    assert store.writes == [["evt-a"]]
    assert store.lookup(["evt-a"]) == {"evt-a": "delivered"}
    outcomes.record_delivered(["evt-a", "evt-b"])  # the poll thread catches up
    assert store.writes == [["evt-a"], ["evt-b"]]


def test_a_delivery_the_poll_thread_writes_in_time_is_never_written_by_the_watch() -> None:
    store = CountingStore()
    outcomes = PendingOutcomes(store)
    outcomes.stage_one("evt-c")
    outcomes.record_lingering()
    outcomes.record_delivered(["evt-c"])
    outcomes.record_lingering()
    outcomes.record_lingering()
    assert store.writes == [["evt-c"]]


def test_a_delivery_is_staged_when_its_call_ends_not_when_its_chunk_does() -> None:
    """A is answered, then B's call takes long: while B's call runs, A is staged already,
    so the watch can make it durable whatever B does."""
    seen_during_b: list[dict[str, Any]] = []

    class SlowSecond:
        def deliver(self, event: dict[str, Any], context: DeliveryContext) -> None:
            if context.event_id == "evt-b":
                seen_during_b.append(fixture.outcomes.lookup(["evt-a"]))

        def close(self) -> None:
            pass

    fixture = Fixture(SlowSecond())  # type: ignore[arg-type]
    fixture.run(record(sample_event("appointment.scheduled", "evt-a"), offset=0),
                record(sample_event("appointment.rescheduled", "evt-b"), offset=1))
    assert seen_during_b == [{"evt-a": "delivered"}]
