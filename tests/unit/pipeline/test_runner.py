"""The poll loop with a scripted consumer: how it stops when processing dies on its thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest

from consumer.dedup.store import MemoryDedupStore
from consumer.observability.telemetry import Telemetry
from consumer.pipeline.broker import Partition, RebalanceListener
from consumer.pipeline.lanes import InlineLane, Lanes
from consumer.pipeline.outbox import HopSender, OnAck
from consumer.pipeline.outcome_buffer import PendingOutcomes
from consumer.pipeline.records import Delivered, Fate, InboundRecord
from consumer.pipeline.runner import Runner
from retry_topics.clock import ManualClock
from retry_topics.policy import RetryPolicy

MAIN = "clinic.events"
DRAIN_TIMEOUT_S = 5.0


class ScriptedConsumer:
    """Assigns partition 0 of the main topic on subscribe, then hands out ``batches``."""

    def __init__(self, batches: list[list[InboundRecord]]) -> None:
        self.batches = batches
        self.closed = False

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        listener.on_assign([(MAIN, 0)])

    def consume(self, max_records: int, timeout_s: float) -> list[InboundRecord]:
        return self.batches.pop(0) if self.batches else []

    def pause(self, partitions: Iterable[Partition]) -> None: ...

    def resume(self, partitions: Iterable[Partition]) -> None: ...

    def seek(self, partition: Partition, offset: int) -> None: ...

    def positions(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return {}

    def backlog(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return {}

    def committed(self, partitions: Sequence[Partition]) -> dict[Partition, int]:
        return {}

    def store_offsets(self, offsets: Mapping[Partition, int]) -> None: ...

    def commit(self) -> None: ...

    def close(self) -> None:
        self.closed = True


class IdleProducer:
    """Nothing is republished in these tests."""

    def serve(self, timeout_s: float) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def close(self) -> None: ...

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes]], on_ack: OnAck) -> None:
        raise AssertionError("nothing is republished in these tests")


def _messages(*offsets: int) -> list[InboundRecord]:
    return [InboundRecord(MAIN, 0, offset, 1_000, b"appt-1", b"v", ()) for offset in offsets]


def _interrupted_from(offset: int, records: Sequence[InboundRecord]) -> list[Fate]:
    """Delivers ``records``, unless one is at ``offset`` or later: then a KeyboardInterrupt."""
    if any(record.offset >= offset for record in records):
        raise KeyboardInterrupt
    return [Delivered(record) for record in records]


def _inline(_hops: HopSender) -> InlineLane:
    return InlineLane(lambda chunk: _interrupted_from(2, chunk))


def _lanes(_hops: HopSender) -> Lanes:
    def process_until(records: Sequence[InboundRecord], _deadline: float | None, /, *,
                      may_wait: bool = False) -> tuple[list[Fate], int]:
        return _interrupted_from(2, records), len(records)

    return Lanes(2, lambda chunk: _interrupted_from(2, chunk), process_until)


@pytest.mark.parametrize("lanes_factory", [_inline, _lanes], ids=["inline", "lanes"])
def test_an_interrupt_escaping_processing_on_the_poll_thread_stops_without_waiting_out_the_drain(
    lanes_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Records the dead call held can never finish: the drain does not wait for them, the
    outcomes already decided are logged, and the interrupt reaches the caller."""
    consumer = ScriptedConsumer([_messages(0, 1), _messages(2, 3)])
    clock = ManualClock()
    runner = Runner(consumer=consumer, producer=IdleProducer(),
                    policy=RetryPolicy(main_topic=MAIN, delays_ms=(5_000,)),
                    lanes_factory=lanes_factory,
                    outcomes=PendingOutcomes(MemoryDedupStore(clock)), clock=clock,
                    telemetry=Telemetry(), drain_timeout_s=DRAIN_TIMEOUT_S)
    caplog.set_level(logging.DEBUG, logger="clinic_events")
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert time.monotonic() - started < DRAIN_TIMEOUT_S / 2
    assert consumer.closed
    delivered = [vars(r)["offset"] for r in caplog.records
                 if vars(r).get("outcome") == "delivered"]
    assert delivered == [0, 1]
    assert "2 records still in flight when the drain ended" in caplog.text
