"""Worker lanes: bounded concurrency with strict per-key order.

A record's key (the entity it is about) picks its lane by hash, and each lane is one thread
working through a FIFO of chunks. So two records with the same key are never in flight at
once and are processed in consumption order, while up to ``len(lanes)`` different keys are
processed concurrently. The poll thread hands each lane one chunk per consume batch, which
keeps the hand-off cost per record small. Results go back on one queue the poll thread
drains; a lane that hits an unexpected error reports it and stops, so the runner can shut
down without storing offsets for unfinished records.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consumer.records import Fate, InboundRecord

ChunkProcessor = Callable[[Sequence[InboundRecord]], list[Fate]]


@dataclass(frozen=True, slots=True)
class LaneFailure:
    """A lane died on an unexpected error; its chunk's records are not done."""

    error: BaseException


LaneResult = list[Fate] | LaneFailure


class InlineLane:
    """``delivery.concurrency = 1``: the poll thread processes each batch itself.

    One event at a time, in order, with no thread hand-off (which costs tens of microseconds
    per event on a small machine). For fast, CPU-only Python handlers; a slow handler here
    delays polling itself, so keep a call well under ``max.poll.interval.ms`` / batch size.
    """

    def __init__(self, process: ChunkProcessor) -> None:
        self._process = process
        self.results: queue.SimpleQueue[LaneResult] = queue.SimpleQueue()

    def dispatch(self, records: Sequence[InboundRecord]) -> None:
        try:
            self.results.put(self._process(records))
        except Exception as exc:  # noqa: BLE001 - reported like a lane failure
            self.results.put(LaneFailure(exc))

    def stop(self, timeout_s: float = 30.0, *, discard_pending: bool = True) -> None:
        """Nothing runs in the background: nothing to stop."""


class Lanes:
    """N threads, each owning a FIFO of record chunks."""

    def __init__(self, count: int, process: ChunkProcessor) -> None:
        self._process = process
        self._discard = False
        self.results: queue.SimpleQueue[LaneResult] = queue.SimpleQueue()
        self._queues: list[queue.SimpleQueue[Sequence[InboundRecord] | None]] = [
            queue.SimpleQueue() for _ in range(count)
        ]
        self._threads = [
            threading.Thread(target=self._work, args=(q,), name=f"lane-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def lane_of(self, record: InboundRecord) -> int:
        """The lane of a record: by key, or by partition+offset for key-less records."""
        key = record.key if record.key else f"{record.partition}:{record.offset}".encode()
        return zlib.crc32(key) % len(self._queues)

    def dispatch(self, records: Sequence[InboundRecord]) -> None:
        """Hand a batch to the lanes: one chunk per lane, consumption order kept."""
        chunks: dict[int, list[InboundRecord]] = {}
        for record in records:
            chunks.setdefault(self.lane_of(record), []).append(record)
        for lane, chunk in chunks.items():
            self._queues[lane].put(chunk)

    def stop(self, timeout_s: float = 30.0, *, discard_pending: bool = True) -> None:
        """End the threads; chunks not yet started are dropped unless asked otherwise.

        Dropping is safe: their offsets were never stored, so they are redelivered.
        """
        self._discard = discard_pending
        for lane_queue in self._queues:
            lane_queue.put(None)
        for thread in self._threads:
            thread.join(timeout_s)

    def _work(self, lane_queue: queue.SimpleQueue[Sequence[InboundRecord] | None]) -> None:
        while True:
            chunk = lane_queue.get()
            if chunk is None:
                return
            if self._discard:
                continue
            try:
                self.results.put(self._process(chunk))
            except BaseException as exc:  # noqa: BLE001 - reported to the poll thread
                self.results.put(LaneFailure(exc))
                return
